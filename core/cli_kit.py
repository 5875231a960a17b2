"""The click pieces every ``edgec`` command is made of, and the runner that maps errors to exit codes.

Commands keep their handlers as ``handler(args: argparse.Namespace) -> int``: a command made by
:func:`command` collects its own parameters and those of the groups above it into one namespace (a group
with a ``dest`` adds the chosen subcommand's name, e.g. ``keys_command="init"``) and calls the handler.
Parsing without running (:func:`parse_only`) returns that namespace instead, so code can read the
defaults of a command line (``edgec build -f``) or run another command's handler (a recipe's ``publish``).

:func:`run` is what a console script calls: usage errors become one line
(``edgec: config error: <message> (see 'edgec build --help')``, exit 2), an :class:`EdgecError` its
one-line message and exit code, ``Ctrl-C`` exit 130, anything else a traceback and exit 1; stdout and
stderr survive their reader going away (:class:`ClosedPipeSafe`); ``_EDGEC_COMPLETE=bash_source edgec``
(or ``zsh_source``, ``fish_source``) prints the shell's completion script.

This module lives in ``core`` because the device agent (``python -m edgec.cloud_sync.agent``) runs it
where nothing of the compiler may be imported; it imports only click and the error classes.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TextIO

import click

from edgec.core.errors import EXIT_CONFIG, EXIT_INTERNAL, EdgecError, brief

Handler = Callable[[argparse.Namespace], int]
"""A command's body: the parsed command line in, the exit code out."""
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 110}
EXIT_INTERRUPTED = 130
HELP_COLUMN = 20
"""Option names longer than this put their help on the next line (argparse's layout: help at column 24)."""
_PARSE_ONLY = object()


class ArgType(click.ParamType):
    """A click type from an argparse-style converter (``text -> value``, raising ``ValueError`` or
    ``argparse.ArgumentTypeError`` with a message that says what was expected).

    Args:
        convert_text: the converter.
        name: the type's name in messages and completion.
        files: whether the shell completes file names for it.
    """

    def __init__(self, convert_text: Callable[[str], Any], name: str | None = None, files: bool = False) -> None:
        self.convert_text = convert_text
        self.name = str(name or getattr(convert_text, "__name__", "value"))
        self.files = files

    def shell_complete(self, ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
        """File names where the value is a path (the shell lists them)."""
        from click.shell_completion import CompletionItem

        return [CompletionItem(incomplete, type="file")] if self.files else []

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        """The converted value.

        Raises:
            click.BadParameter: what the converter refused, with its message.
        """
        if not isinstance(value, str):
            return value
        try:
            return self.convert_text(value)
        except (ValueError, argparse.ArgumentTypeError) as exc:
            self.fail(str(exc), param, ctx)


class Option(click.Option):
    """A click option with a help ``section`` (the heading it is listed under in ``--help``)."""

    def __init__(self, *decls: str, section: str | None = None, **kwargs: Any) -> None:
        super().__init__(list(decls), **kwargs)
        self.section = section


class Argument(click.Argument):
    """A click argument with a help line (listed under *Arguments* in ``--help``)."""

    def __init__(self, name: str, help: str | None = None, **kwargs: Any) -> None:  # noqa: A002 - click's word
        super().__init__([name], **kwargs)
        self.help = help


class Command(click.Command):
    """A command whose description and epilog keep their line breaks (argparse's raw formatter), whose
    options are listed by section, and whose ``greedy`` options take every value up to the next option
    (argparse's ``nargs="+"``: ``--merge a.json b.json``).

    Args:
        description: the text under the usage line, printed as written; default the short help.
        greedy: the options that take several values.
    """

    handler: Handler | None = None
    """What the command runs (set by :func:`command`)."""

    def __init__(self, *args: Any, description: str | None = None, greedy: Iterable[str] = (), **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        super().__init__(*args, **kwargs)
        self.description = description
        self.greedy = tuple(greedy)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Spread each greedy option over its values, then parse as click does."""
        return super().parse_args(ctx, spread_greedy(args, self.greedy))

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Usage, description, arguments, options by section, epilog."""
        self.format_usage(ctx, formatter)
        write_raw(formatter, self.description or self.help)
        rows = [(param.make_metavar(ctx), param.help or "") for param in self.get_params(ctx)
                if isinstance(param, Argument) and param.help]
        if rows:
            with formatter.section("Arguments"):
                formatter.write_dl(rows, col_max=HELP_COLUMN)
        self.format_options(ctx, formatter)
        write_raw(formatter, self.epilog, indent=0)

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The options, under their sections in order of first appearance (*Options* for those without)."""
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and isinstance(param, click.Option):
                sections.setdefault(getattr(param, "section", None) or "Options", []).append(record)
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows, col_max=HELP_COLUMN)


class Group(click.Group):
    """A group listing its commands in the order added, under sections (``add_command(cmd, section=...)``).

    Args:
        dest: the namespace field that receives the chosen subcommand's name (``keys_command``).
        required: when given, the message of the usage error for a missing subcommand; None: the group's
            callback runs alone (``invoke_without_command``).
        description: as for :class:`Command`.
    """

    def __init__(self, *args: Any, dest: str | None = None, required: str | None = "missing ACTION",
                 description: str | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", CONTEXT_SETTINGS)
        kwargs.setdefault("short_help", kwargs.get("help"))
        word = "COMMAND" if dest == "command" else "ACTION"
        kwargs.setdefault("subcommand_metavar", f"{word} [ARGS]..." if required else f"[{word}] [ARGS]...")
        kwargs.update(invoke_without_command=required is None, no_args_is_help=False)
        super().__init__(*args, **kwargs)
        self.dest, self.required, self.description = dest, required, description
        self.sections: dict[str, str] = {}

    def add_command(self, cmd: click.Command, name: str | None = None, section: str | None = None) -> None:
        """Add ``cmd`` (listed under ``section`` in ``--help``)."""
        super().add_command(cmd, name)
        self.sections[name or cmd.name or ""] = section or ("Commands" if self.dest == "command" else "Actions")

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The commands in the order they were added."""
        return list(self.commands)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Refuse a missing subcommand with a one-line usage error (when one is required).

        Raises:
            click.UsageError: no subcommand, for a group that needs one.
        """
        if self.required and not args and not ctx.resilient_parsing:
            raise click.UsageError(f"{self.required}: expected one of {', '.join(self.list_commands(ctx))}", ctx)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Usage, description, options, commands by section, epilog."""
        self.format_usage(ctx, formatter)
        write_raw(formatter, self.description or self.help)
        self.format_options(ctx, formatter)
        write_raw(formatter, self.epilog, indent=0)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The commands with their short help, under their sections."""
        names = [n for n in self.list_commands(ctx) if not self.commands[n].hidden]
        if not names:
            return
        limit = formatter.width - 6 - max(len(n) for n in names)
        sections: dict[str, list[tuple[str, str]]] = {}
        for name in names:
            sections.setdefault(self.sections.get(name, "Commands"), []).append(
                (name, self.commands[name].short_help or self.commands[name].get_short_help_str(limit)))
        for title, rows in sections.items():
            with formatter.section(title):
                formatter.write_dl(rows)


def write_raw(formatter: click.HelpFormatter, text: str | None, indent: int = 2) -> None:
    """``text`` as a paragraph indented by ``indent``, with its line breaks kept (lines are not re-wrapped)."""
    if not text:
        return
    formatter.write_paragraph()
    for line in textwrap.dedent(text.strip("\n")).splitlines():
        formatter.write(f"{'':>{indent}}{line}".rstrip() + "\n")


def spread_greedy(args: Sequence[str], greedy: Sequence[str]) -> list[str]:
    """``--merge a b --out x`` -> ``--merge a --merge b --out x``: a greedy option repeated per value."""
    out: list[str] = []
    current: str | None = None
    for arg in args:
        if arg == "--":
            current = None
        elif arg.startswith("-") and len(arg) > 1:
            current = arg if arg in greedy else None
            if current is not None:
                continue
        elif current is not None:
            out += [current, arg]
            continue
        out.append(arg)
    return out


def command(name: str, handler: Handler, params: Sequence[click.Parameter], help: str,  # noqa: A002 - click's word
            description: str | None = None, epilog: str | None = None, greedy: Iterable[str] = ()) -> Command:
    """A command that runs ``handler`` on its namespace (see the module docstring).

    Args:
        help: the one-line help in the parent's command list.
        description: the text of the command's own ``--help``; default ``help``.
    """

    def callback(**_: Any) -> Any:
        ctx = click.get_current_context()
        args = namespace(ctx)
        return args if ctx.find_root().obj is _PARSE_ONLY else handler(args)

    made = Command(name, callback=callback, params=list(params), help=help, short_help=help,
                   description=description, epilog=epilog, greedy=greedy)
    made.handler = handler
    return made


def namespace(ctx: click.Context) -> argparse.Namespace:
    """The parameters of ``ctx`` and of its parents (the innermost wins), plus each group's ``dest``."""
    values: dict[str, Any] = {}
    current: click.Context | None = ctx
    while current is not None:
        for key, value in current.params.items():
            values.setdefault(key, list(value) if isinstance(value, tuple) else value)
        parent = current.parent
        dest = getattr(parent.command, "dest", None) if parent is not None else None
        if dest:
            values[dest] = current.command.name
        current = parent
    return argparse.Namespace(**values)


def parse_only(cli: click.Command, prog: str, argv: Sequence[str]) -> argparse.Namespace:
    """The namespace the handler of ``argv``'s command would get, without running it.

    Raises:
        click.ClickException: what the command line would be refused for.
    """
    with cli.make_context(prog, list(argv), obj=_PARSE_ONLY) as ctx:
        result = cli.invoke(ctx)
    if not isinstance(result, argparse.Namespace):
        raise click.UsageError(f"'{' '.join(argv)}' names no command", ctx)
    return result


def usage_line(exc: click.ClickException, prog: str) -> str:
    """``edgec: config error: <message> (see 'edgec build --help')``: a usage error on one line."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    ctx = getattr(exc, "ctx", None)
    return f"{prog}: config error: {message} (see '{ctx.command_path if ctx else prog} --help')"


def run(cli: click.Command, argv: Sequence[str] | None, version: str | None = None, prog: str = "edgec",
        name: str = "edgec") -> int:
    """Run ``cli`` as the console script ``prog``; returns the exit code (see the module docstring).

    ``--help`` and ``--version`` raise ``SystemExit(0)`` after printing, as argparse did.

    Args:
        argv: the arguments; default ``sys.argv[1:]``.
        version: edgec's version, named in internal errors; default the installed distribution's.
        name: what error lines start with (``edgec: config error: ...``).
    """
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = ClosedPipeSafe(sys.stdout), ClosedPipeSafe(sys.stderr)  # type: ignore[assignment]
    try:
        instruction = os.environ.get(f"_{prog.replace('-', '_').upper()}_COMPLETE")
        if instruction:
            from click.shell_completion import shell_complete

            return shell_complete(cli, {}, prog, f"_{prog.replace('-', '_').upper()}_COMPLETE", instruction)
        return _invoke(cli, list(sys.argv[1:] if argv is None else argv), prog, name, version)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = streams


def _invoke(cli: click.Command, argv: list[str], prog: str, name: str, version: str | None) -> int:
    try:
        with cli.make_context(prog, argv) as ctx:
            result = cli.invoke(ctx)
        return int(result or 0)
    except click.exceptions.Exit as exc:  # --help, --version: they exit from inside the parser, as with argparse
        raise SystemExit(exc.exit_code) from None
    except click.ClickException as exc:
        print(usage_line(exc, name), file=sys.stderr)
        return EXIT_CONFIG
    except EdgecError as exc:
        print(exc.one_line(), file=sys.stderr)
        return exc.exit_code
    except (KeyboardInterrupt, click.exceptions.Abort):
        print(f"{name}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # InternalError, or any other exception that escaped: a bug in edgec
        traceback.print_exc()
        print(f"{name}: internal error (a bug in edgec {version or _installed_version()}): {type(exc).__name__}: {brief(exc)}; "
              "please report it with the traceback above", file=sys.stderr)
        return EXIT_INTERNAL


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("edgec")
    except PackageNotFoundError:
        return "(version unknown)"


class ClosedPipeSafe:
    """A stand-in for ``sys.stdout``/``sys.stderr`` that survives its reader going away.

    On the first :class:`BrokenPipeError` the stream's file descriptor is pointed at ``/dev/null``, so what
    is still buffered, everything written later (by Python or native code) and the interpreter's final
    flush go nowhere instead of raising. Everything else is the wrapped stream's.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            self._to_devnull()
            return len(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            self._to_devnull()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)

    def _to_devnull(self) -> None:
        try:
            fd = self._stream.fileno()
        except (OSError, ValueError):  # not backed by a file descriptor (an in-memory stream)
            return
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, fd)
        finally:
            os.close(devnull)
