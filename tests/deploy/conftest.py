"""Fixtures of the deployment tests: the tiny exported models, built once per module."""
from __future__ import annotations

import pytest

from tests.deploy.models import CLS, SEG, exported


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    return exported(tmp_path_factory.mktemp("seg"), SEG, "unet")


@pytest.fixture(scope="module")
def cls(tmp_path_factory):
    return exported(tmp_path_factory.mktemp("cls"), CLS, "resnet8")
