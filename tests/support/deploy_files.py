"""Reading the deployment files without Docker or Kubernetes: YAML, a Dockerfile, .dockerignore."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml


# -- YAML, Kubernetes workloads ---------------------------------------------------------
def documents(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def job_spec(workload: dict) -> dict:
    """The Job spec of a Job, or of a CronJob's jobTemplate."""
    spec = workload["spec"]
    return spec["jobTemplate"]["spec"] if workload["kind"] == "CronJob" else spec


def pod_spec(workload: dict) -> dict:
    return job_spec(workload)["template"]["spec"]


def container(workload: dict) -> dict:
    """The one container of a Job or CronJob."""
    (only,) = pod_spec(workload)["containers"]
    return only


def env(workload: dict) -> dict[str, dict]:
    """The container's environment, by name."""
    return {item["name"]: item for item in container(workload).get("env", [])}


# -- the Dockerfile, line by line ----------------------------------------------------------
@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    @property
    def workdir(self) -> str:
        workdir = "/"
        for path in self.all("WORKDIR"):
            workdir = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
        return workdir

    @property
    def env(self) -> dict[str, str]:
        found = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                found[key] = value
        return found

    def copies(self) -> list[tuple[str | None, list[str], str]]:
        """(--from stage or None, sources, destination as an absolute path) of each COPY."""
        found = []
        for args in self.all("COPY"):
            words = shlex.split(args)
            flags = dict(w[2:].split("=", 1) for w in words if w.startswith("--"))
            *sources, dest = [w for w in words if not w.startswith("--")]
            if not dest.startswith("/"):
                dest = f"{self.workdir.rstrip('/')}/{dest.removeprefix('./')}"
            found.append((flags.get("from"), sources, dest.rstrip("/") or "/"))
        return found


def dockerfile(path: Path) -> tuple[dict[str, str], list[Stage]]:
    """The global ARG defaults and the stages, with continuation lines joined."""
    lines, pending = [], ""
    for raw in path.read_text().splitlines():
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        lines.append(pending + raw)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword, _, rest = line.strip().partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        elif not stages and keyword == "ARG":
            key, _, value = rest.partition("=")
            args[key] = value
        else:
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def dockerignore_excludes(dockerignore: Path, path: str) -> bool:
    """Whether .dockerignore keeps ``path`` (relative to the root) out of the build context.

    Docker's rules: patterns in order, the last match wins, ``!`` re-includes,
    ``*`` stays within one path segment, ``**`` spans any number of them, and a
    pattern that matches a directory matches everything below it.
    """
    excluded = False
    parts = path.strip("/").split("/")
    for line in dockerignore.read_text().splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        regex = re.compile(
            "".join(
                {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token)
                or re.escape(token)
                for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]+", pattern.lstrip("!").strip("/"))
            )
        )
        if any(regex.fullmatch("/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded
