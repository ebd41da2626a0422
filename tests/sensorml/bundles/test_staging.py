"""``check_compatible``: a manifest's ``requires.sensorml`` compared as a version (PEP 440
release, a/b/rc, post, dev), and anything that is not a version refused in one line
naming the manifest key. Pure functions: no files."""

from __future__ import annotations

import pytest

from sensorml import __version__
from sensorml.bundles.staging import IncompatibleBundle, check_compatible, release_key
from sensorml.errors import BundleFormatError


def key(v: str) -> tuple:
    return release_key(v, "v")


@pytest.mark.parametrize("lower, higher", [
    ("0.1.0a1", "0.1.0"), ("0.1.0a1", "0.1.0a2"), ("0.1.0a9", "0.1.0b1"), ("0.1.0b2", "0.1.0rc1"),
    ("0.1.0rc1", "0.1.0"), ("0.1.0.dev1", "0.1.0a1"), ("0.1.0a1.dev3", "0.1.0a1"),
    ("0.1.0", "0.1.0.post1"), ("0.1.0.post1.dev1", "0.1.0.post1"), ("0.1.0.dev1", "0.1.0.dev2"),
    ("0.9", "0.10"), ("0.10.0", "1.0rc1"), ("1.9.9", "1.10.0"), ("0.1.0", "0.1.1.dev0"),
])
def test_versions_order_as_pep_440_says(lower, higher):
    assert key(lower) < key(higher)


@pytest.mark.parametrize("a, b", [
    ("0.1", "0.1.0"), ("1", "1.0.0"), ("0.1.0RC1", "0.1.0rc1"), ("0.1.0-rc.1", "0.1.0rc1"),
    ("1.0-beta", "1.0b0"), ("1.0c2", "1.0rc2"), ("v0.2", "0.2"), ("0.1.0+local.7", "0.1.0"),
    ("0.1.0a", "0.1.0a0"),
])
def test_spellings_of_the_same_version_are_equal(a, b):
    assert key(a) == key(b)


def manifest(need) -> dict:
    return {"format_version": 1, "requires": {"sensorml": need}}


@pytest.mark.parametrize("need", ["0.1.0a1", "0.1.0rc2", "0.1.0.dev5", "0.1", __version__, "0.0.9"])
def test_a_bundle_needing_this_version_or_an_earlier_one_is_accepted(need):
    check_compatible(manifest(need), "models/pump/3/manifest.json")  # no TypeError, no refusal


@pytest.mark.parametrize("need", ["0.1.1a1", "0.1.0.post1", "0.2.0.dev1", "1.0"])
def test_a_bundle_needing_a_later_version_is_refused_naming_both(need):
    with pytest.raises(IncompatibleBundle) as e:
        check_compatible(manifest(need), "models/pump/3/manifest.json")
    assert str(e.value) == (f"models/pump/3/manifest.json: needs sensorml >= {need}; this gateway "
                            f"runs {__version__}")


@pytest.mark.parametrize("need", ["latest", "", "1.0-gamma", "0.1.0rc1rc2", "1..2", "0.1.0 final",
                                  3, 0.2, ["0.1"], {"min": "0.1"}])
def test_a_requirement_that_is_not_a_version_is_one_line_naming_the_key(need):
    with pytest.raises(BundleFormatError) as e:
        check_compatible(manifest(need), "models/pump/3/manifest.json")
    msg = str(e.value)
    assert msg == (f"models/pump/3/manifest.json: requires.sensorml: {need!r} is not a version "
                   "(like 0.2, 0.2.1 or 0.3.0rc1)")
    assert "\n" not in msg


def test_no_requirement_is_no_check():
    check_compatible({"format_version": 1}, "m")
    check_compatible({"format_version": 1, "requires": {}}, "m")
