"""The door: one way in for every file the project reads and does not fully control.

Specs (YAML), rank tables (JSON), hccn.conf, IDX data files, checkpoint ``meta.json``, recovery units
and the run-folder marker all come in through :func:`read_bytes`: regular files only (a FIFO or a
device such as ``/dev/zero`` is refused at once, never read), at most a size cap per kind of file.
JSON is decoded strictly (:func:`loads_json`: a key written twice is an error, very deep nesting and
numbers too long for ``int`` are errors, not tracebacks). YAML goes through :func:`loads_yaml`: a
safe loader that also refuses keys written twice, keys that are lists or mappings, nesting deeper than
``YAML_MAX_DEPTH``, more than ``YAML_MAX_NODES`` nodes once aliases are counted at every use (a
295-byte "billion laughs" spec would otherwise expand to gigabytes when a message prints it), and the
YAML 1.1 number forms that YAML 1.2 reads differently (``010``, ``0x10``, ``1_000``, ``1:30``, ``yes``).

Every refusal is an :class:`InputError` naming the file, which each caller turns into its own error
type (SpecError, RankTableError, DataError, RecordError) so the user sees one ``error:`` line.
Values are echoed in messages through :func:`shown`, which never prints more than about 80 characters
whatever the value's size or depth.
"""

from __future__ import annotations

import errno
import json
import os
import re
import reprlib
import stat
from typing import Any, BinaryIO, Dict, List, Optional, Tuple, Union

import yaml

PathLike = Union[str, "os.PathLike[str]"]

# Size caps, by kind of file. A job spec is a few KB; a rank table about 100 bytes per device (16 MiB
# is over 100,000 devices); a record (checkpoint meta, unit, marker) a few KB. IDX files are capped by
# what their header announces (csgm.data), within IDX_BYTES: EMNIST's largest split is 550 MB.
SPEC_BYTES = 1 << 20
TABLE_BYTES = 16 << 20
RECORD_BYTES = 16 << 20
TEXT_BYTES = 1 << 20   # hccn.conf and other small text files
IDX_BYTES = 1 << 30

YAML_MAX_DEPTH = 32      # a spec nests 3 levels; --set values 1 or 2
YAML_MAX_NODES = 10_000  # a full spec is about 150 nodes; every alias counts its target's nodes again
SHOWN_CHARS = 80


class InputError(ValueError):
    """An input file refused at the door: ``source``, where in it (``path``, may be ''), the problem and
    the fix, kept apart so callers re-raise it in their own error type."""

    def __init__(self, source: str, path: str, problem: str, fix: str) -> None:
        self.source, self.path, self.problem, self.fix = source, path, problem, fix
        where = f"{source}: {path}: " if path else f"{source}: "
        super().__init__(f"{where}{problem}; {fix}")


class NotJSON(InputError):
    """JSON syntax error (the file may still be being written: a rank table's writer polls for this)."""


class Unreadable(InputError):
    """A FIFO, device or socket, or a file over its size cap: refused before it is read."""


# -- values in messages -----------------------------------------------------------------------------

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict, _REPR.maxset = 2, 4, 4, 4, 4
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = SHOWN_CHARS, SHOWN_CHARS, 40


def shown(value: Any, limit: int = SHOWN_CHARS) -> str:
    """``repr(value)`` for a message, at most ``limit`` characters: a huge or deeply shared structure
    (YAML aliases) is never expanded, a long string is cut, non-printable characters are escaped."""
    try:
        text = _REPR.repr(value)
    except (ValueError, RecursionError):  # an int too long for str(), a pathological object
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- regular files, capped --------------------------------------------------------------------------

def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: PathLike, limit: int, what: str = "file") -> BinaryIO:
    """``open(path, "rb")`` for a regular file of at most ``limit`` bytes.

    OSError as ``open`` raises it (FileNotFoundError, PermissionError, IsADirectoryError for a folder);
    Unreadable for a FIFO, device or socket (opened without blocking and never read, so a writer-less
    FIFO cannot hang the reader; ``open()`` would block in the kernel) and for a file over ``limit``."""
    source = os.fspath(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(source, flags)
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), source)
        if not stat.S_ISREG(info.st_mode):
            raise Unreadable(source, "", f"is {_kind(info.st_mode)}, not a regular file",
                             f"point at the {what} itself (a copy on disk), not at a pipe or device")
        if info.st_size > limit:
            raise Unreadable(source, "", f"is {info.st_size} bytes, more than the {limit} a {what} may have",
                             f"check that this is the {what}")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: PathLike, limit: int, what: str = "file") -> bytes:
    """The content of regular file ``path`` (:func:`open_regular`), at most ``limit`` bytes (checked
    again while reading: a file may grow, and /proc files report size 0)."""
    with open_regular(path, limit, what) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise Unreadable(os.fspath(path), "", f"holds more than the {limit} bytes a {what} may have",
                         f"check that this is the {what}")
    return data


def decode_text(raw: bytes, source: str, what: str = "file") -> str:
    """UTF-8 (a byte-order mark is dropped); InputError naming the first bad byte."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(source, "", f"not UTF-8 text (byte {e.start})", f"write the {what} as UTF-8") from None


def read_text(path: PathLike, limit: int, what: str = "file") -> str:
    return decode_text(read_bytes(path, limit, what), os.fspath(path), what)


# -- strict JSON --------------------------------------------------------------------------------------

class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: List[Tuple[str, Any]]) -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def loads_json(text: str, source: str) -> Any:
    """``json.loads``, strictly: NotJSON for a syntax error (with line and column), InputError for a key
    given twice in one object (JSON leaves it undefined; Python would keep the last silently), nesting
    too deep for the decoder, or a number of more than 4,300 digits (Python's int limit)."""
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs)
    except json.JSONDecodeError as e:
        raise NotJSON(source, f"$ (line {e.lineno}, column {e.colno})", f"not valid JSON: {e.msg}",
                      "fix the syntax") from None
    except _DuplicateKey as e:
        raise InputError(source, "$", f"key {shown(str(e))} appears twice in one object",
                         "write each key once (JSON readers disagree on which copy counts)") from None
    except RecursionError:
        raise InputError(source, "$", "nested too deeply to read", "check that this is the right file") from None
    except ValueError as e:  # Python >= 3.11: "Exceeds the limit (4300 digits) for integer string conversion"
        problem = ("holds a number of more than 4300 digits" if "digits" in str(e)
                   else f"cannot be read as JSON ({shown(str(e))})")
        raise InputError(source, "$", problem, "check that this is the right file") from None


def read_json(path: PathLike, limit: int, what: str = "JSON file") -> Any:
    source = os.fspath(path)
    return loads_json(decode_text(read_bytes(source, limit, what), source, what), source)


# -- bounded YAML ------------------------------------------------------------------------------------

_YAML12_INT = re.compile(r"[-+]?(0|[1-9][0-9]*)")
_YAML12_BOOL = ("true", "True", "TRUE", "false", "False", "FALSE")


class _Refused(yaml.constructor.ConstructorError):
    """A document BoundedLoader refuses though PyYAML would read it; ``fix`` says what to write."""

    def __init__(self, problem: str, node_or_event: Any, fix: str) -> None:
        super().__init__(None, None, problem, getattr(node_or_event, "start_mark", None))
        self.fix = fix


_SMALLER = "write the values out; a spec needs no aliases"


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no object construction), bounded and strict; see the module docstring."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0   # nodes so far, every alias counting its target's nodes again
        self._sizes: Dict[int, int] = {}  # id(node) -> its expanded node count, once it is complete

    def _count(self, nodes: int, event: Any) -> None:
        self._nodes += nodes
        if self._nodes > YAML_MAX_NODES:
            raise _Refused(f"more than {YAML_MAX_NODES} values once aliases (*name) are expanded", event, _SMALLER)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            target = self.anchors.get(event.anchor)
            if target is not None:  # an undefined alias: PyYAML's own error
                size = self._sizes.get(id(target))
                if size is None:
                    raise _Refused(f"alias *{event.anchor} refers to a value that contains it", event, _SMALLER)
                self._count(size, event)
            return super().compose_node(parent, index)
        self._depth += 1
        if self._depth > YAML_MAX_DEPTH:
            raise _Refused(f"nested more than {YAML_MAX_DEPTH} levels deep", event,
                           "check that this is a job spec: its sections nest 2 levels")
        before = self._nodes
        self._count(1, event)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        self._sizes[id(node)] = self._nodes - before
        return node

    def construct_mapping(self, node: Any, deep: bool = False) -> Dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # '<<: *base': merged keys may be overridden by the mapping's own
            if not isinstance(key_node, yaml.ScalarNode):
                raise _Refused("a key is a list or a mapping", key_node, "write keys as names, e.g. 'train:'")
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"key {shown(key)} appears twice in one mapping",
                                                        key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: Any) -> int:
        text = str(node.value)
        value = super().construct_yaml_int(node)
        if not _YAML12_INT.fullmatch(text):
            raise _Refused(_int_form(text, value), node, f"write {_decimal(text, value)}, or quote it if it is text")
        return value

    def construct_yaml_float(self, node: Any) -> float:
        text = str(node.value)
        if "_" in text or ":" in text:
            raise _Refused(f"{shown(text)} is read by YAML 1.1 as {super().construct_yaml_float(node)}, by "
                           "YAML 1.2 as text", node,
                           "write a plain decimal number without '_' or ':', or quote it if it is text")
        return super().construct_yaml_float(node)

    def construct_yaml_bool(self, node: Any) -> bool:
        text = str(node.value)
        value = super().construct_yaml_bool(node)
        if text not in _YAML12_BOOL:
            raise _Refused(f"{shown(text)} is read as {str(value).lower()} by YAML 1.1 and as text by YAML 1.2",
                           node, f"write {str(value).lower()}, or quote it if it is text")
        return value


BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
BoundedLoader.add_constructor("tag:yaml.org,2002:float", BoundedLoader.construct_yaml_float)
BoundedLoader.add_constructor("tag:yaml.org,2002:bool", BoundedLoader.construct_yaml_bool)


def _int_form(text: str, value: int) -> str:
    """Why an integer other than a plain decimal is refused (YAML 1.1 section "int", YAML 1.2.2 10.3.2)."""
    body = text.lstrip("+-")
    if body[:2] in ("0x", "0X"):
        return f"{shown(text)} is a hexadecimal number ({value})"
    if ":" in body:
        return f"{shown(text)} is read by YAML 1.1 as the base-60 number {value}, by YAML 1.2 as text"
    if body[:2] in ("0b", "0B") or "_" in body:
        return f"{shown(text)} is read by YAML 1.1 as {value}, by YAML 1.2 as text"
    return f"{shown(text)} is read by YAML 1.1 as the octal number {value}, by YAML 1.2 as {int(body.replace('_', ''))}"


def _decimal(text: str, value: int) -> str:
    """What a YAML 1.1 integer form most likely meant: 010 -> 10, 1_000 -> 1000, 0x10 -> 16."""
    digits = text.replace("_", "")
    sign = digits[:1] if digits[:1] in "+-" else ""
    body = digits[len(sign):]
    if body.isdigit():
        return sign + (body.lstrip("0") or "0")
    return str(value)


def loads_yaml(text: str, source: str) -> Any:
    """One YAML document through :class:`BoundedLoader`; InputError (with line and column) otherwise."""
    try:
        return yaml.load(text, Loader=BoundedLoader)
    except yaml.reader.ReaderError as e:
        raise InputError(source, f"character {e.position + 1}",
                         f"character #x{e.character:04x} is not allowed in YAML" if isinstance(e.character, int)
                         else shown(e.reason), "remove it (or write it as an escape inside double quotes)") from None
    except yaml.YAMLError as e:
        mark: Optional[Any] = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        if isinstance(e, _Refused):
            raise InputError(source, where, problem, e.fix) from None
        raise InputError(source, where, f"YAML syntax error: {problem}",
                         "fix the YAML syntax (indentation, ':' after keys, quotes, each key once)") from None
    except RecursionError:  # BoundedLoader caps the depth; this is a backstop
        raise InputError(source, "", f"nested more than {YAML_MAX_DEPTH} levels deep",
                         "check that this is the right file") from None
