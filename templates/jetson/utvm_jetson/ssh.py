"""The board over SSH: the system OpenSSH client, with a deadline on everything and errors that say
what went wrong (wrong host or port, a refused key, an unknown host key, a dropped connection).

Every command runs with ``BatchMode=yes`` (no password or passphrase prompt can hang a call),
``ConnectTimeout`` (a host that does not answer), and ``ServerAliveInterval`` /
``ServerAliveCountMax`` (a connection that dies silently is noticed within seconds). ``-T``: no
terminal on the board, so the bytes of the device's stdin and stdout pass untouched; a device started
over SSH exits at the end of its stdin, which is what it sees when the connection drops or the
client is killed.

Standard library only: generated projects carry this module.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import shutil
import subprocess
from typing import List, Mapping, Optional, Sequence

from project_api.child_process import describe_exit
from project_api.errors import UserError

# ssh's own exit status for its errors (connection, authentication); the remote command's otherwise.
SSH_FAILED = 255
# Liveness probes: a silent connection is declared dead after about 3 x 5 seconds.
ALIVE_INTERVAL_SEC = 5
ALIVE_COUNT = 3
# The exit status of our remote checks when a file the project needs is missing on the board.
MISSING_ON_BOARD = 3


@dataclasses.dataclass(frozen=True)
class SshTarget:
    """Where the board is and how to log in, from the project's ssh_* options."""

    host: str
    port: int = 22
    user: str = ""
    key: str = ""
    extra: str = ""  # more ssh arguments, e.g. "-o UserKnownHostsFile=known_hosts"
    connect_timeout: int = 10

    @classmethod
    def from_options(cls, options: Mapping) -> Optional[SshTarget]:
        """The target the options name, or None when ssh_host is empty (no SSH)."""
        host = (options.get("ssh_host") or "").strip()
        if not host:
            return None
        return cls(host=host, port=int(options.get("ssh_port") or 22), user=options.get("ssh_user") or "",
                   key=options.get("ssh_key") or "", extra=options.get("ssh_options") or "",
                   connect_timeout=max(1, int(options.get("connect_timeout") or 10)))

    @property
    def where(self) -> str:
        """user@host:port, as the user would name it."""
        return f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"

    def argv(self, remote_command: Optional[str], forward: Optional[str] = None) -> List[str]:
        """The ssh command line that runs remote_command (a shell command line) on the board, or
        with remote_command None runs nothing (-N) and only forwards ``forward``, an -L
        specification ("LPORT:127.0.0.1:RPORT")."""
        ssh = shutil.which("ssh")
        if ssh is None:
            raise UserError("ssh not found on PATH",
                            hint="install the OpenSSH client (Debian: apt-get install openssh-client)")
        argv = [ssh, "-T", "-p", str(self.port),
                "-o", "BatchMode=yes", "-o", f"ConnectTimeout={self.connect_timeout}",
                "-o", f"ServerAliveInterval={ALIVE_INTERVAL_SEC}", "-o", f"ServerAliveCountMax={ALIVE_COUNT}",
                "-o", "LogLevel=ERROR"]
        if self.key:
            argv += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.user:
            argv += ["-l", self.user]
        if forward:
            argv += ["-o", "ExitOnForwardFailure=yes", "-L", forward]
        argv += shlex.split(self.extra)
        if remote_command is None:
            return argv + ["-N", self.host]
        return argv + [self.host, "--", remote_command]

    def run(self, remote_command: str, what: str, stdin: Optional[bytes] = None,
            timeout: Optional[float] = None, ok_codes: Sequence[int] = (0,)) -> subprocess.CompletedProcess:
        """Run remote_command on the board and wait for it (at most timeout seconds, by default
        the connect timeout plus 30 s); an exit status outside ok_codes is a UserError saying what
        went wrong."""
        timeout = self.connect_timeout + 30.0 if timeout is None else timeout
        try:
            result = subprocess.run(self.argv(remote_command), input=stdin if stdin is not None else b"",
                                    capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"{what}: no answer over SSH from {self.where} within {timeout:g} s",
                            hint="check that the board is up and reachable; connect_timeout sets how "
                                 "long a connection may take") from None
        if result.returncode not in ok_codes:
            raise ssh_error(self, what, result.returncode, result.stderr.decode("utf-8", "replace"))
        return result


_DIAGNOSES = (
    (re.compile(r"connection refused", re.I),
     "the connection was refused: nothing listens on port {port} of {host}",
     "check ssh_host and ssh_port, and that sshd runs on the board"),
    (re.compile(r"could not resolve hostname|name or service not known", re.I),
     "the host name {host} is unknown",
     "check ssh_host (a name this machine can resolve, or an IP address)"),
    (re.compile(r"connection timed out|operation timed out|no route to host|network is unreachable", re.I),
     "{host} port {port} did not answer within the connect timeout",
     "check that the board is powered and on the network (connect_timeout sets the wait)"),
    (re.compile(r"permission denied", re.I),
     "the board refused the login ({login})",
     "check ssh_key and ssh_user: the key's public half must be in the board's ~/.ssh/authorized_keys"),
    (re.compile(r"host key verification failed|remote host identification has changed", re.I),
     "the host key of {host} is not known to be trusted",
     "add it to your known_hosts (ssh-keyscan -p PORT HOST), or name a file holding it with "
     "-o ssh_options='-o UserKnownHostsFile=FILE'"),
    (re.compile(r"closed by remote host|connection reset|broken pipe|timeout, server .* not responding|"
                r"connection closed", re.I),
     "the SSH connection to {host}:{port} dropped",
     "check that the board and its sshd are still running, then try again"),
)


def ssh_error(target: SshTarget, what: str, returncode: int, stderr: str) -> UserError:
    """The UserError for a failed ssh command: its cause named, ssh's own words as evidence."""
    tail = "\n".join(line for line in stderr.strip().splitlines()[-8:] if line.strip())
    if returncode == SSH_FAILED:
        for pattern, message, hint in _DIAGNOSES:
            if pattern.search(stderr):
                login = f"key {target.key}" if target.key else "ssh's default keys"
                login += f", user {target.user}" if target.user else ""
                text = message.format(host=target.host, port=target.port, login=login)
                return UserError(f"{what}: {text}", hint=hint, details=f"ssh said: {tail}" if tail else None)
        return UserError(f"{what}: ssh to {target.where} failed ({describe_exit(returncode, 'ssh')})",
                         hint="run the same with -v to see ssh's command line", details=tail or None)
    if returncode == MISSING_ON_BOARD:
        return UserError(f"{what}: {tail or 'a file the project needs is missing on the board'}",
                         hint="flash the project first (utvm flash PROJECT_DIR)")
    return UserError(f"{what}: the command on {target.where} failed ({describe_exit(returncode, 'it')})",
                     details=tail or None)


def remote_path(remote_dir: str, name: str) -> str:
    """A shell word for remote_dir/name on the board (relative paths are from the login directory)."""
    return shlex.quote(f"{remote_dir.rstrip('/') or '.'}/{name}")


def install_files(target: SshTarget, remote_dir: str, files: Sequence, what: str,
                  timeout_per_mib: float = 5.0) -> None:
    """Copy local files (pathlib.Path) into remote_dir on the board, executable, each written to a
    temporary name first so a broken copy never replaces a good one. One ssh call per file, with
    the file on its stdin (no scp or sftp needed on the board)."""
    for path in files:
        data = path.read_bytes()
        final = remote_path(remote_dir, path.name)
        partial = remote_path(remote_dir, path.name + ".part")
        command = (f"mkdir -p {shlex.quote(remote_dir)} && cat > {partial} && chmod 755 {partial} && "
                   f"mv -f {partial} {final}")
        timeout = target.connect_timeout + 30.0 + timeout_per_mib * len(data) / 2 ** 20
        target.run(command, what, stdin=data, timeout=timeout)


def check_files(target: SshTarget, remote_dir: str, names: Sequence[str], what: str) -> None:
    """One quick login that checks the board is reachable and holds the named files."""
    def check(name: str) -> str:
        missing = shlex.quote(f"{name} is not in {remote_dir} on the board")
        fail = f"{{ echo {missing} >&2; exit {MISSING_ON_BOARD}; }}"
        return f"{{ test -f {remote_path(remote_dir, name)} || {fail}; }}"

    checks = " && ".join(check(name) for name in names)
    target.run(checks or "true", what)
