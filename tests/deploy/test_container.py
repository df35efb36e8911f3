"""
The container files, checked without Docker (CI has no image registry, so it
builds no image): the Dockerfile is read as BuildKit reads it and its
commands are the README's; its CMD and HEALTHCHECK run here as the container
would run them, this virtualenv standing for the image's; .dockerignore
sends what C{pip install .} reads and no secrets; every variable compose.yaml
gives the daemon is one the daemon reads.
"""

from __future__ import annotations

import configparser
import json
import os
import posixpath
import re
import shlex
import socket
from dataclasses import dataclass
from typing import Any

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import Site

from socktopus_tw.apps import Apps
from socktopus_tw.db import DEFAULT_DATABASE, parseDatabaseUrl
from socktopus_tw.db.dialect import MYSQL
from socktopus_tw.settings import SETTINGS, defaultListen
from tests.support.daemon import APP, SECRET
from tests.support.process import BIN, ROOT, run

DOCKERFILE = os.path.join(ROOT, "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")
COMPOSE = os.path.join(ROOT, "compose.yaml")
README = os.path.join(ROOT, "README.md")

#: Every instruction BuildKit's Dockerfile frontend knows.
INSTRUCTIONS = frozenset(
    "ADD ARG CMD COPY ENTRYPOINT ENV EXPOSE FROM HEALTHCHECK LABEL MAINTAINER ONBUILD "
    "RUN SHELL STOPSIGNAL USER VOLUME WORKDIR".split()
)
HEALTHCHECK_OPTIONS = frozenset(
    ["interval", "timeout", "start-period", "start-interval", "retries"]
)
#: A Go duration as HEALTHCHECK's options take it: 30s, 1m30s, 500ms.
DURATION = re.compile(r"(?:\d+(?:\.\d+)?(?:ns|us|ms|s|m|h))+")
ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


# -- reading the files ---------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    """
    One Dockerfile instruction, its continuation lines joined.
    """

    keyword: str
    arguments: str
    line: int

    def execForm(self, text: str | None = None) -> list[str] | None:
        """
        The JSON array of an exec-form CMD (or of C{text}), else C{None}.
        """
        text = self.arguments if text is None else text
        if not text.startswith("["):
            return None
        try:
            value = json.loads(text)
        except ValueError:
            return None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            return None
        return value


def readDockerfile(path: str) -> list[Instruction]:
    """
    The instructions of a Dockerfile, as BuildKit's parser splits them:
    parser directives only at the top, C{#} lines are comments (inside a
    continuation too), a trailing backslash continues the instruction.

    @raise ValueError: for an unknown instruction or a continuation that
        never ends.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    instructions = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        text = " ".join(part for part in pending if part)
        pending = []
        keyword, _, arguments = text.partition(" ")
        if keyword.upper() not in INSTRUCTIONS:
            raise ValueError(f"line {start}: unknown instruction {keyword!r}")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
    if pending:
        raise ValueError(f"line {start}: the last instruction ends in a backslash")
    return instructions


def shellSteps(command: str) -> list[list[str]]:
    """
    A shell command line as the words of each C{&&} step, redirections
    included as words (C{>/dev/null} is C{[">", "/dev/null"]}).
    """
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    steps: list[list[str]] = [[]]
    for word in lexer:
        if word == "&&":
            steps.append([])
        else:
            steps[-1].append(word)
    return steps


def readmeShellBlocks(heading: str) -> list[str]:
    """
    The commands of the C{```sh} blocks in the README section C{heading},
    one a line, without blank lines.
    """
    with open(README, encoding="utf-8") as f:
        text = f.read()
    section = text.split(f"\n{heading}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def readComposeYaml(path: str) -> Any:
    """
    The YAML that compose.yaml is written in: block mappings, block
    sequences of scalars, plain, single- and double-quoted scalars, comments.

    PyYAML is not a dependency of the suite, and this is all the file needs.
    Anything else (flow collections, anchors and aliases, tags, block
    scalars, several documents) raises L{ValueError}: a change of style fails
    here, loudly, instead of being misread. Scalars stay strings.
    """
    entries = []
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f.read().splitlines(), 1):
            content = _withoutComment(raw).rstrip()
            if not content.strip():
                continue
            indentation = len(content) - len(content.lstrip(" "))
            if content[indentation] == "\t":
                raise ValueError(f"line {number}: a tab in the indentation")
            if content.strip() in ("---", "..."):
                raise ValueError(f"line {number}: one document only")
            entries.append((number, indentation, content.strip()))
    if not entries:
        return None
    value, end = _yamlBlock(entries, 0, entries[0][1])
    if end != len(entries):
        raise ValueError(f"line {entries[end][0]}: unexpected indentation")
    return value


def _withoutComment(line: str) -> str:
    quote = None
    for i, character in enumerate(line):
        if quote == '"' and character == "\\":
            continue
        if quote:
            if character == quote:
                quote = None
        elif character in "'\"" and (i == 0 or line[i - 1] in " :-"):
            quote = character
        elif character == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


_KEY = re.compile(r"([A-Za-z0-9_.-]+):(?:\s+(.*))?")


def _yamlBlock(entries: list[tuple[int, int, str]], i: int, indentation: int) -> tuple[Any, int]:
    if entries[i][2].startswith("- ") or entries[i][2] == "-":
        items = []
        while i < len(entries) and entries[i][1] == indentation:
            number, _, text = entries[i]
            if not text.startswith("- "):
                break
            item = text[2:].strip()
            if _KEY.fullmatch(item):
                raise ValueError(f"line {number}: only scalars in sequences here")
            items.append(_yamlScalar(item, number))
            i += 1
        return items, i
    mapping: dict[str, Any] = {}
    while i < len(entries) and entries[i][1] == indentation:
        number, _, text = entries[i]
        match = _KEY.fullmatch(text)
        if match is None:
            raise ValueError(f"line {number}: expected KEY: VALUE, got {text!r}")
        key, rest = match.groups()
        if key in mapping:
            raise ValueError(f"line {number}: {key!r} twice")
        i += 1
        if rest:
            mapping[key] = _yamlScalar(rest, number)
        elif i < len(entries) and entries[i][1] > indentation:
            mapping[key], i = _yamlBlock(entries, i, entries[i][1])
        elif i < len(entries) and entries[i][1] == indentation and entries[i][2][:2] == "- ":
            # A sequence may sit at its key's own indentation.
            mapping[key], i = _yamlBlock(entries, i, indentation)
        else:
            mapping[key] = None
    if i < len(entries) and entries[i][1] > indentation:
        raise ValueError(f"line {entries[i][0]}: unexpected indentation")
    return mapping, i


def _yamlScalar(text: str, number: int) -> str:
    if text.startswith('"'):
        if len(text) < 2 or not text.endswith('"'):
            raise ValueError(f"line {number}: an unclosed double-quoted string")
        return json.loads(text)
    if text.startswith("'"):
        if len(text) < 2 or not text.endswith("'"):
            raise ValueError(f"line {number}: an unclosed single-quoted string")
        return text[1:-1].replace("''", "'")
    if text[0] in "[]{}&*!|>%@`" or ": " in text:
        raise ValueError(f"line {number}: {text!r} is more YAML than this reader takes")
    return text


#: ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, ...
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def interpolate(value: str, environ: dict[str, str]) -> str:
    """
    C{value} with compose's C{${NAME...}} replaced from C{environ}.
    """
    return INTERPOLATION.sub(lambda match: environ[match[1]], value).replace("$$", "$")


def dockerignored(patterns: list[str], path: str) -> bool:
    """
    Whether Docker leaves C{path} (relative, with C{/}) out of the build
    context: the last pattern that matches it or one of its parent folders
    decides, C{!} patterns putting back (moby's patternmatcher).
    """
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        exclusion = pattern.startswith("!")
        regex = _dockerignoreRegex(pattern.lstrip("!").strip("/"))
        # An inclusion cannot change an ignored path, nor an exclusion a kept one.
        if exclusion != ignored:
            continue
        if any(regex.fullmatch(candidate) for candidate in candidates):
            ignored = not exclusion
    return ignored


def _dockerignoreRegex(pattern: str) -> re.Pattern[str]:
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i + 1)
            regex, i = regex + "[" + pattern[i + 1 : end].replace("!", "^", 1) + "]", end + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def readDockerignore() -> list[str]:
    """
    The patterns of .dockerignore, in order.
    """
    with open(DOCKERIGNORE, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip() and not line.strip().startswith("#")]


# -- what the Dockerfile says --------------------------------------------------


@dataclass
class Image:
    """
    What the Dockerfile builds, read instruction by instruction.
    """

    base: str
    #: Each RUN's shell command and the WORKDIR it runs in.
    runs: list[tuple[str, str]]
    #: The environment the container starts with.
    env: dict[str, str]
    user: str
    workdir: str
    volumes: list[str]
    exposed: list[str]
    cmd: Instruction
    healthcheck: Instruction


def readImage(instructions: list[Instruction]) -> Image:
    """
    Follow the instructions as a build does (WORKDIR, ENV and USER as they
    stand at the end); one stage, one CMD, one HEALTHCHECK, no ENTRYPOINT.
    """
    froms = [i for i in instructions if i.keyword == "FROM"]
    if len(froms) != 1 or instructions[0].keyword != "FROM":
        raise ValueError("expected one stage: one FROM, first")
    workdir, runs, env, volumes, exposed = "/", [], {}, [], []
    user = "root"
    singles: dict[str, Instruction] = {}
    for instruction in instructions:
        keyword, arguments = instruction.keyword, instruction.arguments
        if keyword == "WORKDIR":
            workdir = posixpath.join(workdir, arguments)
        elif keyword == "RUN":
            runs.append((arguments, workdir))
        elif keyword == "ENV":
            for word in shlex.split(arguments):
                name, equals, value = word.partition("=")
                if not equals:
                    raise ValueError(f"line {instruction.line}: ENV NAME=VALUE, please")
                env[name] = value
        elif keyword == "USER":
            user = arguments
        elif keyword == "VOLUME":
            volumes += instruction.execForm() or arguments.split()
        elif keyword == "EXPOSE":
            exposed += arguments.split()
        elif keyword in ("CMD", "HEALTHCHECK", "ENTRYPOINT"):
            if keyword in singles:
                raise ValueError(f"line {instruction.line}: a second {keyword} replaces the first")
            singles[keyword] = instruction
    if "ENTRYPOINT" in singles:
        raise ValueError("no ENTRYPOINT: the CMD is the whole command")
    for needed in ("CMD", "HEALTHCHECK"):
        if needed not in singles:
            raise ValueError(f"no {needed}")
    return Image(
        base=froms[0].arguments,
        runs=runs,
        env=env,
        user=user,
        workdir=workdir,
        volumes=volumes,
        exposed=exposed,
        cmd=singles["CMD"],
        healthcheck=singles["HEALTHCHECK"],
    )


def healthcheckParts(instruction: Instruction) -> tuple[dict[str, str], list[str] | None]:
    """
    HEALTHCHECK's C{--option=value}s and its exec-form command.
    """
    options, rest = {}, instruction.arguments
    while rest.startswith("--"):
        option, _, rest = rest.partition(" ")
        name, _, value = option[2:].partition("=")
        options[name] = value
        rest = rest.lstrip()
    keyword, _, command = rest.partition(" ")
    if keyword.upper() != "CMD":
        raise ValueError(f"line {instruction.line}: HEALTHCHECK [OPTIONS] CMD [...]")
    return options, instruction.execForm(command.strip())


def imageProgram(image: Image, program: str) -> str:
    """
    The program this checkout's virtualenv has in place of the image's
    virtualenv's C{program}, which the install step made.
    """
    venv = posixpath.join(installStep(image)[1], ".venv", "bin")
    if posixpath.dirname(program) != venv:
        raise AssertionError(f"{program} is not from the image's virtualenv {venv}")
    return os.path.join(BIN, posixpath.basename(program))


def installStep(image: Image) -> tuple[list[list[str]], str]:
    """
    The RUN that makes the virtualenv, as steps, and its working directory.
    """
    for command, workdir in image.runs:
        steps = shellSteps(command)
        if steps[0][:3] == ["python3", "-m", "venv"]:
            return steps, workdir
    raise AssertionError("no RUN makes the virtualenv")


def image() -> Image:
    """
    What the project's Dockerfile builds.
    """
    return readImage(readDockerfile(DOCKERFILE))


def readmeRunSteps() -> list[list[str]]:
    """
    The README's "Run it" command, as steps: make the venv, install, run.
    """
    [command] = readmeShellBlocks("## Run it")
    return shellSteps(command)


def freePort() -> int:
    """
    A port free on every interface, as the daemon listens on tcp:$PORT.
    """
    with socket.socket() as probe:
        probe.bind(("", 0))
        return probe.getsockname()[1]


# -- the tests -----------------------------------------------------------------


class DockerfileTests(SynchronousTestCase):
    """
    The Dockerfile read as BuildKit reads it, against the README and the
    daemon's settings.
    """

    def setUp(self) -> None:
        self.image = image()

    def test_parses(self) -> None:
        """
        Known instructions only, one slim Python stage, exec-form JSON where
        an array is written, valid HEALTHCHECK options.
        """
        instructions = readDockerfile(DOCKERFILE)
        for instruction in instructions:
            if instruction.arguments.startswith("[") and instruction.keyword != "RUN":
                self.assertIsNotNone(
                    instruction.execForm(), f"line {instruction.line}: not a JSON array of strings"
                )
        self.assertRegex(self.image.base, r"^python:3\.\d+-slim(-\w+)?$")
        options, command = healthcheckParts(self.image.healthcheck)
        self.assertIsNotNone(command, "HEALTHCHECK CMD is not exec form")
        self.assertLessEqual(set(options), HEALTHCHECK_OPTIONS)
        for name, value in options.items():
            pattern = r"\d+" if name == "retries" else DURATION.pattern
            self.assertRegex(value, f"^{pattern}$", f"--{name}")

    def test_readmeInstallIsTheImageInstall(self) -> None:
        """
        The image installs as "Run it" says (make .venv, pip install the
        checkout), then writes the plugin cache as "Operating it" says.
        """
        steps, workdir = installStep(self.image)
        readme = readmeRunSteps()
        self.assertEqual(steps[:2], readme[:2])
        [cacheLine] = [line for line in readmeShellBlocks("## Operating it") if "--help" in line]
        [cache] = shellSteps(cacheLine)
        self.assertEqual(steps[2:], [[".venv/bin/twistd", *cache[1:]]])
        self.assertEqual(posixpath.basename(cache[0]), "twistd")
        # The checkout it installs is the build context, copied to that directory.
        copies = [
            (i.arguments, workdir)
            for i in readDockerfile(DOCKERFILE)
            if i.keyword in ("COPY", "ADD")
        ]
        self.assertEqual(copies, [(". .", workdir)])

    def test_readmeRunIsTheImageCommand(self) -> None:
        """
        CMD is "Run it"'s twistd command, from the virtualenv the install
        made, plus C{--pidfile=}: a twistd.pid in the volume would stop the
        next start after a SIGKILL (it would find its own pid 1 alive). Exec
        form, so SIGTERM reaches twistd and not a shell.
        """
        words = readmeRunSteps()[2]
        # NAME=value words first (the app secret), then the command.
        first = next(i for i, word in enumerate(words) if not ASSIGNMENT.match(word))
        self.assertGreater(first, 0, words)
        program, *arguments = words[first:]
        _, workdir = installStep(self.image)
        command = self.image.cmd.execForm()
        self.assertIsNotNone(command, "CMD is not exec form")
        self.assertEqual(
            command,
            [posixpath.join(workdir, program), *arguments[:-1], "--pidfile=", arguments[-1]],
        )
        self.assertEqual(arguments[-1], "socktopus")

    def test_noSecretInTheImage(self) -> None:
        """
        The README's run gives an app secret on the command line; the image
        sets none (they come from the container's environment).
        """
        [assignment] = readmeRunSteps()[2][:1]
        name = assignment.partition("=")[0]
        self.assertEqual(Apps.fromEnvironment({name: "x"}).names(), [name.split("_")[0].lower()])
        self.assertEqual(Apps.fromEnvironment(self.image.env).names(), [])
        self.assertNotIn("SOCKTOPUS_RECAPTCHA_SECRET", self.image.env)
        self.assertNotIn("SOCKTOPUS_DATABASE", self.image.env)

    def test_notRoot(self) -> None:
        """
        USER is the uid useradd gives the system user, not 0.
        """
        user = self.image.user.partition(":")[0]
        self.assertNotIn(user, ("", "root", "0"))
        [useradd] = [
            step
            for command, _ in self.image.runs
            for step in shellSteps(command)
            if step[0] == "useradd"
        ]
        uid = useradd[useradd.index("--uid") + 1]
        self.assertIn(user, (uid, useradd[-1]))
        self.assertNotEqual(uid, "0")
        self.assertIn("--system", useradd)

    def test_volumeHoldsTheSqliteFile(self) -> None:
        """
        The daemon runs in the volume: the default database is a relative
        SQLite path, so the file lands there; the directory is made for the
        daemon's user before VOLUME, so a new volume is its user's too.
        """
        self.assertEqual(self.image.volumes, [self.image.workdir])
        path = parseDatabaseUrl(DEFAULT_DATABASE).arguments["database"]
        self.assertFalse(posixpath.isabs(path), DEFAULT_DATABASE)
        self.assertEqual(
            posixpath.dirname(posixpath.join(self.image.workdir, path)), self.image.workdir
        )
        [install] = [
            step
            for command, _ in self.image.runs
            for step in shellSteps(command)
            if step[:2] == ["install", "-d"]
        ]
        self.assertEqual(install[-1], self.image.workdir)
        owner = install[install.index("-o") + 1]
        useradd = next(
            step
            for command, _ in self.image.runs
            for step in shellSteps(command)
            if step[0] == "useradd"
        )
        self.assertIn(owner, (useradd[-1], useradd[useradd.index("--uid") + 1]))
        self.assertEqual(install[install.index("-m") + 1], "0700")

    def test_healthcheckAsksHealthOnTheListeningPort(self) -> None:
        """
        The daemon listens on tcp:$PORT, PORT is the exposed port, and the
        check asks /health on $PORT.
        """
        port = self.image.env["PORT"]
        self.assertEqual(defaultListen(self.image.env), [f"tcp:{port}"])
        self.assertEqual(self.image.exposed, [port])
        _, command = healthcheckParts(self.image.healthcheck)
        program, flag, code = command
        self.assertEqual(posixpath.basename(program), "python")
        imageProgram(self.image, program)
        self.assertEqual(flag, "-c")
        self.assertIn("'http://127.0.0.1:%s/health' % os.environ.get('PORT', '8080')", code)


class Recorder(Resource):
    """
    Answers every GET with C{status} and remembers the paths asked.
    """

    isLeaf = True

    def __init__(self, status: int) -> None:
        super().__init__()
        self.status = status
        self.paths: list[bytes] = []

    def render_GET(self, request: Any) -> bytes:
        self.paths.append(request.path)
        request.setResponseCode(self.status)
        return b"{}"


class ContainerRunTests(TestCase):
    """
    The image's CMD and HEALTHCHECK as the container runs them: in an empty
    directory standing for the volume, with the image's environment and an
    app secret, this virtualenv's programs for the image's.
    """

    timeout = 60

    def setUp(self) -> None:
        self.image = image()
        self.volume = os.path.abspath(self.mktemp())
        os.makedirs(self.volume)
        self.port = freePort()
        self.env = {
            **self.image.env,
            "PORT": str(self.port),
            f"{APP.upper()}_SOCKTOPUS_SECRET": SECRET,
        }

    def healthcheck(self):
        _, [program, *arguments] = healthcheckParts(self.image.healthcheck)
        return run(self, imageProgram(self.image, program), *arguments, env=self.env).ended

    async def test_daemonRunsHealthyAndKeepsItsDataInTheVolume(self) -> None:
        """
        The CMD serves on $PORT, the check passes, the SQLite file is in the
        volume and no pidfile is; SIGTERM stops it with 0, and then the
        check fails.
        """
        program, *arguments = self.image.cmd.execForm()
        daemon = run(
            self, imageProgram(self.image, program), *arguments, env=self.env, path=self.volume
        )
        match = await daemon.waitFor(rb"Listening on \S*:(\d+) \(tcp:(\d+)\)")
        self.assertEqual(int(match.group(1)), self.port)
        self.assertEqual(await self.healthcheck(), 0)
        files = os.listdir(self.volume)
        self.assertIn("socktopus.sqlite3", files)
        self.assertNotIn("twistd.pid", files)
        daemon.transport.signalProcess("TERM")
        self.assertEqual(await daemon.ended, 0, daemon.errors.decode())
        self.assertNotEqual(await self.healthcheck(), 0)

    async def test_checkAsksHealthAndFailsOnAnError(self) -> None:
        """
        The check asks exactly /health; an error status is unhealthy.
        """
        for status, expected in ((200, True), (503, False)):
            recorder = Recorder(status)
            port = await TCP4ServerEndpoint(reactor, self.port, interface="127.0.0.1").listen(
                Site(recorder)
            )
            try:
                exit = await self.healthcheck()
            finally:
                await port.stopListening()
            self.assertEqual(exit == 0, expected, f"status {status}: exit {exit}")
            self.assertEqual(recorder.paths, [b"/health"])


class DockerignoreTests(SynchronousTestCase):
    """
    The build context: what C{pip install .} reads, and no secrets.
    """

    def setUp(self) -> None:
        self.patterns = readDockerignore()

    def test_keepsWhatPipInstallReads(self) -> None:
        """
        setup.cfg, pyproject.toml, the files setup.cfg names, and every file
        of the packages it installs.
        """
        parser = configparser.ConfigParser()
        parser.read(os.path.join(ROOT, "setup.cfg"))
        named = ["setup.cfg", "pyproject.toml", *parser["metadata"]["license_files"].split()]
        named += [
            value.removeprefix("file:").strip()
            for value in parser["metadata"].values()
            if value.startswith("file:")
        ]
        packages = parser["options.packages.find"]["include"].split()
        folders = {p.split(".")[0] for p in packages}
        for folder in folders:
            for directory, subdirectories, files in os.walk(os.path.join(ROOT, folder)):
                subdirectories[:] = [d for d in subdirectories if d != "__pycache__"]
                named += [
                    os.path.relpath(os.path.join(directory, name), ROOT)
                    for name in files
                    if name != "dropin.cache" and not name.endswith((".pyc", ".pyo"))
                ]
        self.assertIn("socktopus_tw/db/schema", " ".join(named))
        self.assertIn("twisted/plugins/socktopus_plugin.py", named)
        self.assertEqual([n for n in named if dockerignored(self.patterns, n)], [])

    def test_leavesOutSecretsAndByproducts(self) -> None:
        """
        A .env, SQLite files, the checkout's virtualenv and git, caches, the
        SDK's node_modules stay out.
        """
        for path in [
            ".env",
            "socktopus.sqlite3",
            ".venv/bin/python",
            ".git/HEAD",
            "_trial_temp/test.log",
            "socktopus_tw/__pycache__/apps.cpython-311.pyc",
            "socktopus_tw/relay/__pycache__/tokens.cpython-311.pyc",
            "twisted/plugins/dropin.cache",
            "sdk/js/node_modules/ws/index.js",
            "socktopus.egg-info/PKG-INFO",
            "tests/test_apps.py",
        ]:
            self.assertTrue(dockerignored(self.patterns, path), path)

    def test_matcher(self) -> None:
        """
        The matcher follows Docker's rules: a folder's pattern covers its
        files, the last matching pattern decides, C{*} stays in one folder.
        """
        self.assertTrue(dockerignored(["a"], "a/b/c"))
        self.assertFalse(dockerignored(["*", "!a"], "a/b"))
        self.assertTrue(dockerignored(["*", "!a", "a/b"], "a/b/c"))
        self.assertFalse(dockerignored(["a/*.py"], "a/b/c.py"))
        self.assertTrue(dockerignored(["**/*.py"], "a/b/c.py"))
        self.assertTrue(dockerignored(["**/*.py[co]"], "c.pyc"))


class ComposeTests(SynchronousTestCase):
    """
    compose.yaml configures the daemon only through settings the daemon
    reads, with MariaDB, and keeps its data in the image's volume.
    """

    def setUp(self) -> None:
        self.compose = readComposeYaml(COMPOSE)
        self.services = self.compose["services"]
        self.daemon = self.services["socktopus"]
        self.image = image()

    def test_buildsTheDockerfileHere(self) -> None:
        self.assertEqual(self.daemon["build"], ".")

    def test_everyVariableIsOneTheDaemonReads(self) -> None:
        """
        Each variable is a setting's, one that picks the endpoint, or an
        app's secret: a renamed option fails here.
        """
        variables = {setting.variable for setting in SETTINGS}
        environment = self.daemon["environment"]
        self.assertTrue(environment)
        for name in environment:
            listens = defaultListen({name: "tcp:1"}) != defaultListen({})
            app = Apps.fromEnvironment({name: "x"}).names()
            self.assertTrue(name in variables or listens or app, f"{name} is no setting")

    def test_noSecretIsWrittenHere(self) -> None:
        """
        Secrets come from .env by interpolation, and must be set: a missing
        one stops compose, it never runs with a default.
        """
        environment = self.daemon["environment"]
        secrets = [n for n in environment if Apps.fromEnvironment({n: "x"}).names()]
        secrets.append("SOCKTOPUS_DATABASE")
        for service in self.services.values():
            for name, value in (service.get("environment") or {}).items():
                for match in INTERPOLATION.finditer(value):
                    self.assertEqual(match[2], ":?", f"{name}: {match[0]} has a default")
        for name in secrets:
            self.assertRegex(environment[name], INTERPOLATION.pattern)

    def test_databaseIsTheMariadbService(self) -> None:
        """
        SOCKTOPUS_DATABASE parses as the daemon parses it, and names the
        MariaDB service, its database, user and password, and its port.
        """
        mariadb = self.services["mariadb"]
        self.assertRegex(mariadb["image"], r"^mariadb:")
        db = mariadb["environment"]
        url = self.daemon["environment"]["SOCKTOPUS_DATABASE"]
        [variable] = INTERPOLATION.findall(url)
        self.assertEqual(INTERPOLATION.findall(db["MARIADB_PASSWORD"]), [variable])
        config = parseDatabaseUrl(interpolate(url, {variable[0]: "p4ss-word_1"}))
        self.assertEqual(config.module, MYSQL.module)
        self.assertEqual(config.arguments["host"], "mariadb")
        self.assertEqual(config.arguments["port"], 3306)
        self.assertEqual(config.arguments["user"], db["MARIADB_USER"])
        self.assertEqual(config.arguments["database"], db["MARIADB_DATABASE"])
        self.assertEqual(config.arguments["password"], "p4ss-word_1")
        self.assertEqual(self.daemon["depends_on"], {"mariadb": {"condition": "service_healthy"}})
        self.assertIn("healthcheck.sh", mariadb["healthcheck"]["test"])
        self.assertEqual(mariadb["volumes"], ["mariadb-data:/var/lib/mysql"])

    def test_volumeAndPort(self) -> None:
        """
        A named volume at the image's VOLUME, and the container's PORT
        published.
        """
        [volume] = self.daemon["volumes"]
        name, _, target = volume.partition(":")
        self.assertEqual([target], self.image.volumes)
        self.assertEqual(self.compose["volumes"], {name: None, "mariadb-data": None})
        [published] = self.daemon["ports"]
        self.assertEqual(published.rpartition(":")[2], self.image.env["PORT"])

    def test_reader(self) -> None:
        """
        The small YAML reader reads what the file holds and refuses the rest.
        """
        path = self.mktemp()
        for text in ["a: [1, 2]\n", "a: &x 1\n", "a: |\n  x\n", "- a: 1\n", "a:\n\tb: 1\n"]:
            with open(path, "w") as f:
                f.write(text)
            self.assertRaises(ValueError, readComposeYaml, path)
        with open(path, "w") as f:
            f.write("a:  # note\n  b: 'it''s'\n  c:\n  - \"x # y\"\n  - z\nd:\n")
        self.assertEqual(
            readComposeYaml(path), {"a": {"b": "it's", "c": ["x # y", "z"]}, "d": None}
        )
