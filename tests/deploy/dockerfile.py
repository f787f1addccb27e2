"""Just enough of the Dockerfile and .dockerignore formats to check the images without a Docker engine."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [instruction.args for instruction in self.instructions if instruction.keyword == keyword]


@dataclass
class Dockerfile:
    global_args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        return next(stage for stage in self.stages if stage.name == name)

    def chain(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        chain = [stage]
        names = {candidate.name for candidate in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain

    def image(self, stage: Stage) -> str:
        """The external image a stage ultimately starts from, with global ARG defaults substituted."""
        base = self.chain(stage)[-1].base
        return _VARIABLE.sub(lambda match: self.global_args.get(match.group(1), match.group(0)), base)

    def effective(self, stage: Stage, keyword: str) -> str | None:
        """The last value of an inherited setting (USER, HEALTHCHECK, ENTRYPOINT) for a stage."""
        for member in self.chain(stage):
            values = member.all(keyword)
            if values:
                return values[-1]
        return None

    def env(self, stage: Stage) -> dict[str, str]:
        """ENV values of a stage and its ancestors (``KEY=VALUE`` form)."""
        values: dict[str, str] = {}
        for member in reversed(self.chain(stage)):
            for args in member.all("ENV"):
                for token in shlex.split(args):
                    key, _, value = token.partition("=")
                    values[key] = value
        return values


def logical_lines(text: str) -> list[str]:
    """Instructions with their continuation lines joined and comments dropped."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        lines.append(current)
    return lines


def parse(path: Path) -> Dockerfile:
    parsed = Dockerfile(global_args={}, stages=[])
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = re.sub(r"\s+", " ", args).strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            parsed.stages.append(Stage(base=words[0], name=name))
        elif not parsed.stages and keyword == "ARG":
            key, _, default = args.partition("=")
            parsed.global_args[key] = default
        else:
            parsed.stages[-1].instructions.append(Instruction(keyword, args))
    return parsed


def pip_install_arguments(run: str) -> list[list[str]]:
    """The arguments of every ``pip install`` in a RUN command (commands joined by ``&&`` or ``;``)."""
    commands: list[list[str]] = [[]]
    for word in shlex.split(run):
        if word in {"&&", ";", "||"}:
            commands.append([])
        else:
            commands[-1].append(word)
    return [
        words[2:]
        for words in commands
        if len(words) >= 2 and words[0].endswith("pip") and words[1] == "install"
    ]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` out of the build context: the last matching pattern decides, and a
    pattern matching a parent directory matches everything under it."""
    parents = [path] + ["/".join(path.split("/")[:n]) for n in range(1, path.count("/") + 1)]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        regex = _pattern_regex(pattern.removeprefix("!").strip("/"))
        if any(regex.fullmatch(candidate) for candidate in parents):
            excluded = not negated
    return excluded


def dockerignore_patterns(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]
