"""Reading one TOML table of `agent.toml`: typed getters that record problems instead of raising.

The loader (`loader.py`) walks the document table by table; a `Table` reads each key, checks it
and returns a usable value even when the key is wrong (its default, or an empty placeholder), so
the loader keeps going and reports every problem at once, then raises before any placeholder can
be used. Every table of one file shares one `Context`: the environment, the problem list, the
folder relative paths follow, and whether secrets are read at all.

Also here, because every string value goes through it: `${VAR}` expansion (an unset variable is a
problem naming it and the key, never an empty string far from its cause), and reading secrets
from `<key>_file` or systemd's `$CREDENTIALS_DIRECTORY`. No problem message here ever contains a
secret value: only key names, paths and types.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bridge_agent.config.specs import OptionSpec, bounds_problem
from bridge_agent.config.values import (
    HTTPS_ONLY,
    MASK,
    Listen,
    Secret,
    parse_duration,
    type_name,
    url_problems,
)
from bridge_agent.errors import InputError
from bridge_agent.inputs import read_regular_file

__all__ = ["REQUIRED", "Context", "Missing", "Table", "suggest"]

T = TypeVar("T")

_PLAIN_TABLE = re.compile(r"\[[a-z]+\]")
_VARIABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:[?-])(.*))?", re.DOTALL)
_SECRET_FILE_LIMIT = 64 * 1024  # a credential is small; anything bigger is the wrong file
_PLACEHOLDER = Secret("")  # a secret not read (load_config with secrets=False)


class Missing:
    """Marks a key without a default: leaving it out is a problem."""


REQUIRED = Missing()


@dataclass(slots=True)
class Context:
    """What every table of one file shares while it is read."""

    env: Mapping[str, str]
    problems: list[str]
    config_dir: Path  # relative paths in the file resolve against this
    credentials_dir: Path | None  # systemd's $CREDENTIALS_DIRECTORY, when set
    secrets: bool = True  # False: secrets are placeholders, never expanded nor read (load_config)
    # Every secret value read so far: a mistake elsewhere in the file can repeat one (a token
    # pasted into the wrong key), and the loader masks them all in its messages (`masked`).
    revealed: list[str] = field(default_factory=list)

    def masked(self, message: str) -> str:
        """`message` with every secret value read from this file replaced by the mask."""
        for value in sorted(self.revealed, key=len, reverse=True):
            message = message.replace(value, MASK)
        return message


def suggest(word: str, candidates: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the closest candidate, or ""."""
    matches = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean '{matches[0]}'?)" if matches else ""


class Table:
    """Reads one TOML table, recording problems instead of raising.

    Each getter marks its key as seen, checks it, and returns a usable value even when the key is
    wrong (its default or an empty placeholder): the loader keeps going to find the next problem,
    and raises before any placeholder could be used.
    """

    def __init__(
        self, label: str, data: dict[str, Any], context: Context, *, quiet: bool = False
    ) -> None:
        self.label = label
        self.data = data
        self.context = context
        self.quiet = quiet  # the table itself is missing or broken: do not list its missing keys
        self.seen: set[str] = set()

    def problem(self, key: str, message: str) -> None:
        self.context.problems.append(f"{self.label} {key}: {message}")

    def missing(self, key: str, hint: str = "") -> None:
        if not self.quiet:
            self.context.problems.append(f"{self.label} missing required key '{key}'{hint}")

    def finish(self, allowed: Iterable[str]) -> None:
        """Report every key no getter asked for, with the closest allowed key."""
        allowed = list(allowed)
        for key in self.data:
            if key not in allowed and key not in self.seen:
                self.context.problems.append(
                    f"{self.label} unknown key '{key}'{suggest(key, allowed)}"
                )

    def raw(self, key: str) -> Any:
        """The value with `${VAR}` expanded in every string inside it (None when absent)."""
        self.seen.add(key)
        return self._expand_all(key, self.data.get(key))

    def _expand_all(self, where: str, value: Any) -> Any:
        if isinstance(value, str):
            return self._expand(where, value, secret=False)
        if isinstance(value, list):
            return [self._expand_all(f"{where}[{i}]", v) for i, v in enumerate(value)]
        if isinstance(value, dict):
            return {k: self._expand_all(f"{where}.{k}", v) for k, v in value.items()}
        return value

    def _typed(self, key: str, kinds: type | tuple[type, ...], expected: str) -> Any:
        """The raw value if present and of the right TOML type, else None (problem recorded)."""
        self.seen.add(key)
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) != (kinds is bool) or not isinstance(value, kinds):
            self.problem(key, f"expected {expected}, got {type_name(value)}")
            return None
        return value

    def _default(self, key: str, default: T | Missing, placeholder: T) -> T:
        if isinstance(default, Missing):
            self.missing(key)
            return placeholder
        return default

    def string(self, key: str, default: str | Missing = REQUIRED) -> str:
        value = self._typed(key, str, "a string")
        if value is None:
            return self._default(key, default, "") if key not in self.data else ""
        expanded = self._expand(key, value, secret=False)
        if expanded is None:
            return ""
        if not expanded and isinstance(default, Missing):
            self.problem(key, "must not be empty")
        return expanded

    def integer(
        self, key: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        value = self._typed(key, int, "an integer")
        if value is None:
            return default
        return self._bounded(key, value, minimum, maximum, default)

    def _bounded(
        self, key: str, value: int, minimum: int | None, maximum: int | None, default: int
    ) -> int:
        problem = bounds_problem(value, minimum, maximum)
        if problem is not None:
            self.problem(key, problem)
            return default
        return int(value)

    def number(self, key: str, default: float, *, minimum: float, maximum: float) -> float:
        value = self._typed(key, (int, float), "a number")
        if value is None:
            return default
        if not math.isfinite(value) or not minimum <= value <= maximum:
            self.problem(key, f"must be from {minimum:g} to {maximum:g}, got {value}")
            return default
        return float(value)

    def string_list(self, key: str) -> tuple[str, ...]:
        """An array of non-empty strings (`${VAR}` expanded); () when absent or wrong."""
        value = self.raw(key)
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem(key, f"expected an array of strings, got {type_name(value)}")
            return ()
        out: list[str] = []
        for n, item in enumerate(value):
            if not isinstance(item, str):
                self.problem(f"{key}[{n}]", f"expected a string, got {type_name(item)}")
            elif not item.strip():
                self.problem(f"{key}[{n}]", "must not be empty")
            else:
                out.append(item.strip())
        return tuple(out)

    def boolean(self, key: str, default: bool) -> bool:
        value = self._typed(key, bool, "a boolean (true or false)")
        return default if value is None else bool(value)

    def duration(self, key: str, default: float, *, positive: bool = False) -> float:
        value = self._typed(key, (str, int, float), 'a duration such as "30s" or a number')
        if value is None:
            return default
        if isinstance(value, str):
            value = self._expand(key, value, secret=False)
            if value is None:
                return default
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default
        if positive and seconds <= 0:
            self.problem(key, "must be more than zero")
            return default
        return seconds

    def path(self, key: str, default: Path | Missing | None = REQUIRED) -> Path | None:
        if key not in self.data:
            self.seen.add(key)
            return self._default(key, default, None)
        text = self.string(key)  # present, so it must be a non-empty string
        if not text:
            return None
        # Relative to the config file, not to the working directory (which is / under systemd).
        return self.context.config_dir / text

    def listen(self, key: str, default: Listen) -> Listen:
        if key not in self.data:
            self.seen.add(key)
            return default
        text = self.string(key)
        if not text:
            return default
        try:
            return Listen.parse(text)
        except ValueError as exc:
            self.problem(key, f"'{text}': {exc}")
            return default

    def url(self, key: str, *, https_unless_loopback: bool = False) -> str:
        """An http(s) URL without a trailing slash ("" when it is wrong: the load fails anyway).

        With `https_unless_loopback`, plain http:// only to loopback: the token and the whole
        catalog (or signed webhook deliveries) travel in these requests (design.md section 6).
        """
        text = self.string(key)
        if not text:
            return ""
        found = url_problems(text, https_unless_loopback=https_unless_loopback)
        for message in found:
            if message.startswith(HTTPS_ONLY) and _PLAIN_TABLE.fullmatch(self.label):
                # `[hub]`: say hub.url, as TOML dotted keys.
                self.context.problems.append(f"{self.label[1:-1]}.{key} {message}")
            else:
                self.problem(key, message)
        return "" if found else text.rstrip("/")

    def option(self, key: str, spec: OptionSpec) -> Any:
        """A platform option, checked against its adapter's spec; its default when absent."""
        if key not in self.data:
            self.seen.add(key)
            if spec.required:
                self.missing(key)
            return spec.default
        if spec.kind == "path":
            return self.path(key)
        if spec.kind == "boolean":
            return self.boolean(key, spec.default)
        if spec.kind == "integer":
            return self.integer(key, spec.default, minimum=spec.minimum, maximum=spec.maximum)
        if spec.kind == "url":
            return self.url(key, https_unless_loopback=True) or spec.default
        value = self.string(key, spec.default)
        problem = spec.pattern_problem(value)
        if problem is not None:
            self.problem(key, problem)
            return spec.default
        return value

    def secret(
        self, key: str, *, required: bool = True, implicit_name: str | None
    ) -> Secret | None:
        """A credential from `key`, `<key>_file`, or `$CREDENTIALS_DIRECTORY/<implicit_name>`.

        No message here may contain the value: only key names, paths and types.
        """
        file_key = f"{key}_file"
        self.seen.update((key, file_key))
        inline, from_file = key in self.data, file_key in self.data
        if inline and from_file:
            self.problem(key, f"give either {key} or {file_key}, not both")
            return None
        if not self.context.secrets:
            return self._placeholder(key, file_key, inline, from_file, required=required)
        if inline:
            value = self.data[key]
            if not isinstance(value, str):
                self.problem(key, f"expected a string, got {type_name(value)}")
                return None
            text = self._expand(key, value, secret=True)
            if text is None:
                return None
            if not text:
                self.problem(key, "is empty")
                return None
            self.context.revealed.append(text)
            return Secret(text)
        if from_file:
            name = self.data[file_key]
            if not isinstance(name, str):
                self.problem(file_key, f"expected a string, got {type_name(name)}")
                return None
            name = self._expand(file_key, name, secret=False)
            if name is None:
                return None
            if not name:
                self.problem(file_key, "must not be empty")
                return None
            # Relative credential names mean systemd's credentials when it provides them.
            base = self.context.credentials_dir or self.context.config_dir
            return self._read_secret(file_key, base / name)
        credentials = self.context.credentials_dir
        if implicit_name and credentials is not None:
            candidate = credentials / implicit_name
            if candidate.exists():
                return self._read_secret(key, candidate)
        if required:
            tried = f", or {file_key}"
            if implicit_name:
                tried += f", or a credential '{implicit_name}' in $CREDENTIALS_DIRECTORY"
            self.missing(key, f" (give {key}{tried})")
        return None

    def _placeholder(
        self, key: str, file_key: str, inline: bool, from_file: bool, *, required: bool
    ) -> Secret | None:
        """Without secrets: check only the TOML type; an empty `Secret` stands in for the value.

        A required secret always gets one (it is needed only by what talks to a store or the
        hub); an optional one only when the file gives it, so `"webhook_secret" in secrets`
        still says whether the store verifies webhooks.
        """
        given = key if inline else file_key
        if (inline or from_file) and not isinstance(self.data[given], str):
            self.problem(given, f"expected a string, got {type_name(self.data[given])}")
            return None
        return _PLACEHOLDER if inline or from_file or required else None

    def _read_secret(self, key: str, path: Path) -> Secret | None:
        try:
            # systemd's credentials are regular files (links followed); a FIFO or device named
            # here must not hang `validate`, and the size is bounded before reading.
            data = read_regular_file(path, max_bytes=_SECRET_FILE_LIMIT, follow_symlinks=True)
        except FileNotFoundError:
            self.problem(key, f"cannot read secret file {path}: No such file or directory")
            return None
        except InputError as exc:
            if str(exc).startswith("larger than"):
                self.problem(
                    key, f"secret file {path} is larger than 64 KiB: is it the right file?"
                )
            else:
                # The system's reason, or the kind of entry: the path is in our message.
                self.problem(key, f"cannot read secret file {path}: {exc}")
            return None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            self.problem(key, f"secret file {path} is not valid UTF-8")
            return None
        # `echo token > file` and editors add a final newline that is not part of the secret.
        text = text.rstrip("\r\n")
        if not text:
            self.problem(key, f"secret file {path} is empty")
            return None
        self.context.revealed.append(text)
        return Secret(text)

    def _expand(self, key: str, text: str, *, secret: bool) -> str | None:
        """Expand `${VAR}`, `${VAR:-default}`, `${VAR:?message}` and `$$` in one value.

        None (with the problem recorded) when a reference cannot be expanded.
        """
        if "$" not in text:
            return text
        env = self.context.env
        out: list[str] = []
        at = 0
        while (dollar := text.find("$", at)) >= 0:
            out.append(text[at:dollar])
            after = text[dollar + 1 : dollar + 2]
            if after == "$":
                out.append("$")
                at = dollar + 2
                continue
            if after != "{":
                # A lone `$` is most likely a `$VAR` that would otherwise silently stay literal.
                self.problem(key, "a '$' must start ${VAR}; write $$ for a literal $")
                return None
            close = text.find("}", dollar + 2)
            if close < 0:
                self.problem(key, "'${' is not closed by '}'")
                return None
            body = text[dollar + 2 : close]
            at = close + 1
            match = _VARIABLE.fullmatch(body)
            if match is None:
                # The body of a secret may be the secret itself, pasted between the braces.
                shown = "" if secret else f" '${{{body}}}'"
                self.problem(
                    key, f"bad reference{shown}: expected ${{NAME}} with NAME [A-Za-z_0-9]"
                )
                return None
            name, operator, argument = match.groups()
            value = env.get(name)
            if operator == ":-":
                out.append(value or argument)
            elif operator == ":?" and not value:
                message = argument or "is not set"
                self.problem(key, f"${{{name}}}: {message}")
                return None
            elif value is None:
                self.problem(key, f"environment variable {name} is not set (used as ${{{name}}})")
                return None
            else:
                out.append(value)
        out.append(text[at:])
        return "".join(out)
