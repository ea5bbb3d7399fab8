"""Transfer-learning tests run as on a machine offline: torchvision's and timm's weight downloads fail at once,
so no test touches the network; runs land in the test's own folder."""

import sys
import urllib.error

import pytest
import timm.models._builder
import torchvision


def no_network(*args, **kwargs):
    raise urllib.error.URLError("no network in tests")


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cli.py"])
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(timm.models._builder, "load_pretrained", no_network)  # timm's hub and URL downloads
