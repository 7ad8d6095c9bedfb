"""common.settings: one declaration gives validation, files, flags and help."""

import argparse
import dataclasses

import pytest

from common.settings import (
    ConfigError,
    Settings,
    add_flags,
    describe,
    from_dict,
    from_flags,
    parse_value,
    setting,
)


@dataclasses.dataclass(frozen=True)
class Toy(Settings):
    size: int = setting(3, "how many", min=1, max=10)
    rate: float = setting(0.5, "a share", min=0, max=1)
    mode: str = setting("fast", "how", choices=("fast", "slow"))
    names: list[str] = setting(["a"], "some names")
    ks: list[int] = setting([1, 5], "cut-offs")
    extra: list[str] = setting([], "repeatable", repeat=True)
    on: bool = setting(False, "a switch")
    limit: int | None = setting(None, "optional", min=0)

    def check(self) -> None:
        if self.mode == "slow" and self.size > 5:
            raise ConfigError(f"{self.size} is too many when slow", "size")


def _parse(*argv, prefix=""):
    parser = argparse.ArgumentParser()
    add_flags(parser, Toy, prefix=prefix)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"size": 0}, "^size: 0 is below the minimum 1$"),
        ({"size": 2.5}, "^size: expected an integer, got 2.5$"),
        ({"size": True}, "^size: expected an integer"),
        ({"rate": float("nan")}, "^rate: expected a number, got nan$"),
        ({"rate": 2}, "^rate: 2.0 is above the maximum 1$"),
        ({"mode": "warp"}, "^mode: 'warp' is not one of fast, slow$"),
        ({"ks": [1, "x"]}, r"^ks\[1\]: expected an integer"),
        ({"names": "a"}, "^names: expected a list"),
        ({"limit": -1}, "^limit: -1 is below the minimum 0$"),
        ({"mode": "slow", "size": 7}, "^size: 7 is too many when slow$"),  # check()
    ],
)
def test_construction_validates_and_names_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        Toy(**values)


def test_ints_become_floats_and_none_is_allowed_where_declared():
    toy = Toy(rate=1, limit=None)
    assert toy.rate == 1.0 and isinstance(toy.rate, float) and toy.limit is None


def test_from_dict_prefixes_nested_keys():
    @dataclasses.dataclass(frozen=True)
    class Outer(Settings):
        toy: Toy = dataclasses.field(default_factory=Toy)

    assert from_dict(Outer, {"toy": {"size": 4}}).toy.size == 4
    with pytest.raises(ConfigError, match="^toy.size: 11 is above the maximum 10$"):
        from_dict(Outer, {"toy": {"size": 11}})
    with pytest.raises(ConfigError, match=r"^toy.sise: unknown key \(known: "):
        from_dict(Outer, {"toy": {"sise": 4}})
    with pytest.raises(ConfigError, match="^toy: expected a mapping, got 3$"):
        from_dict(Outer, {"toy": 3})


def test_flags_are_generated_with_types_defaults_and_help():
    assert from_flags(Toy, _parse()) == Toy()  # unset flags keep the declared defaults
    toy = from_flags(
        Toy,
        _parse(
            "--size=4",
            "--rate=0.25",
            "--mode=slow",
            "--names=x,y",
            "--ks=[10, 20]",
            "--extra=--a=1,2",
            "--extra=b",
            "--on",
            "--limit=none",
        ),
    )
    assert toy == Toy(4, 0.25, "slow", ["x", "y"], [10, 20], ["--a=1,2", "b"], True, None)
    assert from_flags(Toy, _parse("--no-on"), base=Toy(on=True)).on is False
    help_text = argparse.ArgumentParser()
    add_flags(help_text, Toy)
    text = help_text.format_help()
    assert "how many (>= 1, <= 10) (default: 3)" in text
    assert 'how [fast|slow] (default: "fast")' in text


def test_bad_flags_name_the_flag():
    with pytest.raises(ConfigError, match="^--size: 0 is below the minimum 1$"):
        from_flags(Toy, _parse("--size=0"))
    with pytest.raises(ConfigError, match="^--toy-ks: expected an integer"):
        from_flags(Toy, _parse("--toy-ks=1,x", prefix="toy-"), prefix="toy-")
    with pytest.raises(ConfigError, match="^--size: 7 is too many when slow$"):
        from_flags(Toy, _parse("--size=7", "--mode=slow"))


def test_parse_value_follows_the_declared_type():
    assert parse_value("1.0", str) == "1.0"  # a string key keeps its text
    assert parse_value("1.0", float) == 1.0
    assert parse_value("a,b", list[str]) == ["a", "b"]
    assert parse_value("[1, 2]", list[str]) == ["1", "2"]
    assert parse_value("none", int | None) is None
    assert parse_value("true", bool) is True


def test_describe_lists_every_key_with_default_range_and_choices():
    text = describe(Toy, "toy settings")
    assert text.splitlines()[0] == "toy settings (defaults shown):"
    assert "    size=3  how many (>= 1, <= 10)" in text
    assert '    mode="fast"  how [fast|slow]' in text
    assert '    names=["a"]  some names' in text
    assert "    limit=null  optional (>= 0)" in text
