"""The comparison report: collect run folders, plot, render one self-contained HTML page + Markdown (`slimcv.report`)."""
