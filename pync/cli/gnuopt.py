"""glibc's getopt_long, which parses nc's command line on Linux.

Its rules, kept here: options and operands may be mixed (``pync host 80
-v``) unless POSIXLY_CORRECT is set; ``--`` ends the options; ``-`` alone
is an operand; short flags cluster (``-vzw5``) and take a value attached or
as the next word; long names take ``--name=value`` or ``--name value`` and
may be abbreviated to any unique prefix.  Errors carry glibc's words
(``invalid option -- 'Q'``).

pync has its own parser rather than the standard library's ``getopt``
because importing that one costs more than the rest of ``pync -h``
(it loads ``gettext``, which loads ``re``).
"""

from __future__ import annotations

import os


class OptionError(Exception):
    """A command-line error, worded as glibc's getopt prints it."""


def gnu_getopt(argv: list[str], short: str, long: list[str]
               ) -> tuple[list[tuple[str, str]], list[str]]:
    """Parse argv: ([(option, value), ...], operands).

    ``short`` is getopt's optstring (``"w:v"``: -w takes a value); ``long``
    lists names, a trailing ``=`` meaning the option takes a value, ``?``
    that it may take one (only as ``--name=value``, as glibc's
    optional_argument).  Options
    come back as ``-v`` or ``--verbose`` (the full name), value ``""`` for
    flags.
    """
    takes = {name.rstrip("=?"): name[-1:] if name[-1:] in "=?" else "" for name in long}
    pairs: list[tuple[str, str]] = []
    operands: list[str] = []
    permute = "POSIXLY_CORRECT" not in os.environ
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            operands.extend(argv[i:])
            break
        if arg.startswith("--"):
            i = _long(arg[2:], argv, i, takes, pairs)
        elif arg.startswith("-") and arg != "-":
            i = _short(arg[1:], argv, i, short, pairs)
        elif permute:
            operands.append(arg)
        else:
            operands.extend(argv[i - 1:])
            break
    return pairs, operands


def _long(text: str, argv: list[str], i: int, takes: dict[str, str],
          pairs: list[tuple[str, str]]) -> int:
    name, has_value, value = text.partition("=")
    if name in takes:
        full = name
    else:
        matches = [n for n in takes if n.startswith(name)]
        if not matches:
            raise OptionError(f"unrecognized option '--{name}'")
        if len(matches) > 1:
            raise OptionError(f"option '--{name}' is ambiguous")
        full = matches[0]
    if takes[full] == "=":
        if not has_value:
            if i >= len(argv):
                raise OptionError(f"option '--{full}' requires an argument")
            value = argv[i]
            i += 1
    elif has_value and not takes[full]:
        raise OptionError(f"option '--{full}' doesn't allow an argument")
    pairs.append(("--" + full, value))
    return i


def _short(cluster: str, argv: list[str], i: int, short: str,
           pairs: list[tuple[str, str]]) -> int:
    for pos, letter in enumerate(cluster):
        at = short.find(letter)
        if letter == ":" or at < 0:
            raise OptionError(f"invalid option -- '{letter}'")
        if short[at + 1:at + 2] != ":":
            pairs.append(("-" + letter, ""))
            continue
        value = cluster[pos + 1:]
        if not value:
            if i >= len(argv):
                raise OptionError(f"option requires an argument -- '{letter}'")
            value = argv[i]
            i += 1
        pairs.append(("-" + letter, value))
        break
    return i
