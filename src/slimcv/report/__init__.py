"""The comparison report (`slimcv.report`): collect run folders, plot, render one self-contained HTML page + Markdown."""
