"""The OPC UA commissioning commands end to end: `edge-agent browse`, `certs create`, `read`
and `validate --online`, each run as a subprocess against the bundled simulators (also
subprocesses, on loopback)."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from agent.cli.processes import free_port, terminate
from tests.support.harness import REPO

CNC_NS = "urn:edge-agent:sim:cnc"
CLI_TIMEOUT = 60  # a hung command fails the test instead of hanging it


class OpcSim:
    """`python -m simulators.opcua.<kind>` in a subprocess; its stdout lines are collected by a
    reader thread so the test can wait for "listening", "paused", "restarted"..."""

    def __init__(self, kind: str, port: int, *extra: str, time_scale: str | None = "20",
                 module: str | None = None) -> None:
        self.kind, self.port = kind, port
        self.url = f"opc.tcp://127.0.0.1:{port}"
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._eof = False
        scale = [] if time_scale is None else ["--time-scale", time_scale]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"simulators.opcua.{module or kind}", "--port", str(port),
             *scale, *extra],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.wait_line(f"{kind} listening on opc.tcp://127.0.0.1:{port}", 0, 20)
        except BaseException:
            self.stop()
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._cond:
                self.lines.append(raw.decode(errors="replace").rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_line(self, text: str, start: int, timeout: float) -> int:
        """Index of the first line from `start` on that contains `text`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    break
                self._cond.wait(left)
        raise AssertionError(f"{self.kind} simulator did not print {text!r} within {timeout}s; "
                             f"output: {self.lines[-20:]}")

    def stop(self) -> None:
        terminate(self.proc)  # type: ignore[arg-type]


@pytest.fixture
def cnc() -> Iterator[OpcSim]:
    sim = OpcSim("cnc", free_port(), "--seed", "1")
    yield sim
    sim.stop()


def edge_agent(*args: str, timeout: float = CLI_TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, check=False)


def write_config(root: Path, cnc_port: int, imm_port: int) -> Path:
    """A config folder with the example cnc and injection machine files, pointed at the
    given simulator ports. The broker is never contacted by these commands."""
    cfg = root / "config"
    (cfg / "machines.d").mkdir(parents=True)
    (cfg / "agent.yaml").write_text(
        "agent: {id: gw-test, site: testsite}\n"
        f"mqtt: {{url: 'mqtt://127.0.0.1:{free_port()}'}}\n"
        "buffer: {path: buffer.db}\n"
        "metrics: {listen: null}\n")
    examples = REPO / "config/examples/machines.d"
    cnc_text = (examples / "cnc.yaml").read_text()
    imm_text = (examples / "injection.yaml").read_text()
    assert "127.0.0.1:4840" in cnc_text and "127.0.0.1:4841" in imm_text
    (cfg / "machines.d" / "cnc.yaml").write_text(cnc_text.replace("127.0.0.1:4840", f"127.0.0.1:{cnc_port}"))
    (cfg / "machines.d" / "injection.yaml").write_text(
        imm_text.replace("127.0.0.1:4841", f"127.0.0.1:{imm_port}"))
    return cfg


def signal_lines(stdout: str) -> dict[str, list[str]]:
    """`edge-agent read` output: signal name -> its lines."""
    out: dict[str, list[str]] = {}
    for line in stdout.splitlines():
        if line.strip():
            out.setdefault(line.split()[0], []).append(line)
    return out


def no_traceback(out: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in out.stderr and "Traceback" not in out.stdout, out.stderr


# -- browse -------------------------------------------------------------------------------


def test_browse_prints_a_tree_with_node_ids_types_and_values(cnc: OpcSim) -> None:
    out = edge_agent("browse", cnc.url, "--path", "/Objects/Machines/CNC-01", "--depth", "2")
    assert out.returncode == 0, out.stderr
    no_traceback(out)
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"CNC-01  (nsu={CNC_NS};s=CNC-01)  Object")
    monitoring = [l for l in lines if "Monitoring  (" in l]
    assert monitoring and f"(nsu={CNC_NS};s=CNC-01.Monitoring)" in monitoring[0]
    # Depth 2: the machine's folders and their children, not deeper (Spindle's variables).
    assert any(f"(nsu={CNC_NS};s=CNC-01.Monitoring.Spindle)  Object" in l for l in lines)
    assert not any("ActSpeed" in l for l in lines)
    manufacturer = next(l for l in lines if "Manufacturer" in l)
    assert f"(nsu={CNC_NS};s=CNC-01.Identification.Manufacturer)  Variable  String = '" in manufacturer
    assert re.search(r"YearOfConstruction .*  Variable  UInt16 = 2019$",
                     next(l for l in lines if "YearOfConstruction" in l))
    assert re.search(r"CycleCount .*UInt64 = \d+$", next(l for l in lines if "CycleCount" in l))
    # Tree drawing: children are indented under their parent.
    assert any(l.startswith(("├─ ", "└─ ")) for l in lines)
    assert any(l.startswith(("│  ├─ ", "│  └─ ", "   └─ ", "   ├─ ")) for l in lines)
    # Every node line carries a namespace-URI NodeId (never a bare ns=index form).
    assert not any(re.search(r"\(ns=\d+;", l) for l in lines)
    assert re.fullmatch(r"\(\d+ nodes\)", out.stderr.strip().splitlines()[-1])
    assert int(out.stderr.strip().splitlines()[-1][1:].split()[0]) == len(lines)

    # ToolNumber is one level further down: start at Monitoring.
    out = edge_agent("browse", cnc.url, "--path", "/Objects/Machines/CNC-01/Monitoring",
                     "--depth", "2")
    assert out.returncode == 0, out.stderr
    tool = next(l for l in out.stdout.splitlines() if "ToolNumber" in l)
    assert f"(nsu={CNC_NS};s=CNC-01.Monitoring.Tool.ToolNumber)" in tool
    assert re.search(r"UInt32 = \d+$", tool), tool


def test_browse_from_a_node_id(cnc: OpcSim) -> None:
    start = f"nsu={CNC_NS};s=CNC-01.Monitoring.Spindle"
    out = edge_agent("browse", cnc.url, "--path", start, "--depth", "1")
    assert out.returncode == 0, out.stderr
    no_traceback(out)
    lines = out.stdout.splitlines()
    assert f"({start})  Object" in lines[0]
    children = {re.split(r"\s+", l)[1]: l for l in lines[1:]}
    assert set(children) == {"2:ActSpeed", "2:CmdSpeed", "2:Override", "2:Load"}
    assert re.search(r"Variable  Double = -?\d+(\.\d+)?$", children["2:ActSpeed"])
    assert f"({start}.Override)" in children["2:Override"]


def test_browse_of_a_path_that_does_not_exist_fails_clearly(cnc: OpcSim) -> None:
    out = edge_agent("browse", cnc.url, "--path", "/Objects/Machines/CNC-01/NoSuchFolder")
    assert out.returncode == 1
    no_traceback(out)
    assert "no child 'NoSuchFolder' under" in out.stderr
    assert f"nsu={CNC_NS};s=CNC-01" in out.stderr  # where the walk stopped
    assert out.stdout == ""


def test_browse_of_a_node_id_that_does_not_exist_fails(cnc: OpcSim) -> None:
    out = edge_agent("browse", cnc.url, "--path", f"nsu={CNC_NS};s=CNC-01.NoSuchNode")
    no_traceback(out)
    assert out.returncode != 0, out.stdout


@pytest.mark.parametrize("path", ["Objects/Machines", "/Objects//Machines"])
def test_browse_of_a_malformed_path_fails_without_traceback(cnc: OpcSim, path: str) -> None:
    out = edge_agent("browse", cnc.url, "--path", path)
    no_traceback(out)
    assert out.returncode != 0
    assert "browse path" in out.stderr


def test_browse_where_nothing_listens_fails_clearly_and_quickly() -> None:
    port = free_port()
    started = time.monotonic()
    out = edge_agent("browse", f"opc.tcp://127.0.0.1:{port}", "--path", "/Objects", timeout=30)
    assert time.monotonic() - started < 20  # well within the 5 s default request timeout x 4
    assert out.returncode == 1
    no_traceback(out)
    assert f"edge-agent: opc.tcp://127.0.0.1:{port}:" in out.stderr
    assert "Connect call failed" in out.stderr or "refused" in out.stderr.lower()
    assert out.stdout == ""


def test_browse_with_a_policy_but_no_certificate_is_a_usage_error() -> None:
    out = edge_agent("browse", f"opc.tcp://127.0.0.1:{free_port()}", "--policy", "Basic256Sha256")
    assert out.returncode == 2
    no_traceback(out)
    assert "policy Basic256Sha256 needs certificate, private_key, trust" in out.stderr


# -- certs create ---------------------------------------------------------------------------


def _certificate(path: Path) -> x509.Certificate:
    data = path.read_bytes()
    assert data[:1] == b"\x30", "not DER"
    return x509.load_der_x509_certificate(data)


def test_certs_create_writes_an_application_certificate_and_a_private_key(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    out = edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:x:edge-agent")
    assert out.returncode == 0, out.stderr
    cert_path, key_path = pki / "own" / "cert.der", pki / "own" / "key.pem"
    assert str(cert_path) in out.stdout and "urn:x:edge-agent" in out.stdout
    assert (pki / "trusted").is_dir() and not any((pki / "trusted").iterdir())

    cert = _certificate(cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:x:edge-agent"]
    assert san.get_values_for_type(x509.DNSName)  # the host name
    basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.value.ca is False
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign
    assert cert.not_valid_after_utc.year - cert.not_valid_before_utc.year >= 9  # 3650 days

    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    key = load_pem_private_key(key_path.read_bytes(), None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600

    # Again without --force: refused, nothing replaced.
    before = cert_path.read_bytes(), key_path.read_bytes()
    again = edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:x:edge-agent")
    assert again.returncode == 1
    no_traceback(again)
    assert f"{cert_path} exists (use --force to replace it)" in again.stderr
    assert (cert_path.read_bytes(), key_path.read_bytes()) == before

    forced = edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:y:edge-agent", "--force")
    assert forced.returncode == 0, forced.stderr
    assert cert_path.read_bytes() != before[0] and key_path.read_bytes() != before[1]
    san = _certificate(cert_path).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:y:edge-agent"]
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_certs_create_force_makes_the_new_key_private_again(tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:x:a").returncode == 0
    key_path = pki / "own" / "key.pem"
    key_path.chmod(0o644)  # e.g. restored from a backup or copied around
    assert edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:x:a",
                      "--force").returncode == 0
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


# -- read -----------------------------------------------------------------------------------


def test_read_prints_every_signal_of_a_machine(tmp_path: Path, cnc: OpcSim) -> None:
    cfg = write_config(tmp_path, cnc.port, free_port())
    out = edge_agent("read", "cnc-01", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    no_traceback(out)
    lines = signal_lines(out.stdout)
    # One line (or more, for subscribed values that changed while waiting) per signal, in
    # file order; the example has 28 signals.
    assert len(lines) == 28
    names = list(lines)
    assert names[0] == "machine.state" and names[-1] == "machine.software_revision"
    assert re.fullmatch(r"program\.name\s+'O\d+_\w+'  good  \d\d:\d\d:\d\d\.\d{3}", lines["program.name"][0])
    assert re.fullmatch(r"machine\.manufacturer\s+'Musterwerke Werkzeugmaschinen GmbH'  good  "
                        r"\d\d:\d\d:\d\d\.\d{3}", lines["machine.manufacturer"][0])
    assert all(" rev/min  good  " in l for l in lines["spindle.speed.actual"])
    assert lines["machine.mode"][0].split()[1] in ("'Automatic'", "'MDI'", "'Manual'")  # value_as: name
    assert re.search(r"^tool\.number\s+\d+  good", lines["tool.number"][0])
    # Alarms are events: none raised while waiting is fine, and said so.
    assert all("(no value within the wait)" in l or "good" in l for l in lines["alarm.code"])


def test_read_of_an_unknown_machine_lists_the_known_ones(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port(), free_port())
    out = edge_agent("read", "cnc-99", "-c", str(cfg))
    assert out.returncode == 2
    no_traceback(out)
    assert f"no machine 'cnc-99' in {cfg} (machines: cnc-01, imm-01)" in out.stderr


def test_read_of_a_stopped_simulator_cannot_reach_it(tmp_path: Path) -> None:
    sim = OpcSim("cnc", free_port())
    cfg = write_config(tmp_path, sim.port, free_port())
    sim.stop()
    out = edge_agent("read", "cnc-01", "-c", str(cfg))
    assert out.returncode == 1
    no_traceback(out)
    assert "edge-agent: cannot reach cnc-01:" in out.stderr
    assert out.stdout == ""


# -- validate --online ------------------------------------------------------------------------

BROKEN_SIGNALS = (
    # Added to the signals of the template the machine file uses (cnc-sim).
    "signals:\n"
    # A browse path that is well-formed but not on the server (subscribed) ...
    "  - {name: x.spindle.bogus, path: Monitoring/Spindle/NoSuchNode, poll: fast}\n"
    # ... and NodeIds of the right namespace that do not exist: read, and subscribed.
    f"  - {{name: x.ident.bogus, node: \"nsu={CNC_NS};s=CNC-01.Identification.NoSuchNode\", "
    "poll: info, mode: read}\n"
    f"  - {{name: x.tool.bogus, node: \"nsu={CNC_NS};s=CNC-01.Monitoring.Tool.NoSuchNode\", "
    "poll: fast}\n"
)


def test_validate_online_checks_every_signal_on_the_live_servers(tmp_path: Path, cnc: OpcSim) -> None:
    imm = OpcSim("injection", free_port(), time_scale="30")
    try:
        cfg = write_config(tmp_path, cnc.port, imm.port)
        out = edge_agent("validate", "-c", str(cfg), "--online")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{cfg}: OK (2 machine(s), 54 signal(s), checked online)"

        cnc_file = cfg / "machines.d" / "cnc.yaml"
        text = cnc_file.read_text()
        assert text.endswith("\n")
        first_line = len(text.splitlines()) + 2  # 1-based line of the first appended signal
        cnc_file.write_text(text + BROKEN_SIGNALS)

        offline = edge_agent("validate", "-c", str(cfg))
        assert offline.returncode == 0, offline.stderr  # both are well-formed references
        assert "57 signal(s))" in offline.stdout

        out = edge_agent("validate", "-c", str(cfg), "--online")
        assert out.returncode == 2, out.stdout
        no_traceback(out)
        errors = [l for l in out.stderr.splitlines() if l.startswith("machines.d/")]
        assert errors == [
            f"machines.d/cnc.yaml:{first_line}: signals[0]: x.spindle.bogus: the device says "
            "node_unresolved",
            f"machines.d/cnc.yaml:{first_line + 1}: signals[1]: x.ident.bogus: the device says "
            "BadNodeIdUnknown",
            f"machines.d/cnc.yaml:{first_line + 2}: signals[2]: x.tool.bogus: the device says "
            + "monitored_item:BadNodeIdUnknown",
        ], out.stderr
        assert "3 error(s), 0 machine(s) unreachable" in out.stderr

        imm.stop()
        out = edge_agent("validate", "-c", str(cfg), "--online")
        assert out.returncode == 2
        no_traceback(out)
        assert re.search(r"machines.d/injection.yaml: cannot reach imm-01: .+", out.stderr), out.stderr
        assert "3 error(s), 1 machine(s) unreachable" in out.stderr
    finally:
        imm.stop()


def test_validate_online_with_every_simulator_down(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port(), free_port())
    started = time.monotonic()
    out = edge_agent("validate", "-c", str(cfg), "--online")
    assert time.monotonic() - started < 30
    assert out.returncode == 2
    no_traceback(out)
    assert "cannot reach cnc-01" in out.stderr and "cannot reach imm-01" in out.stderr
    assert "0 error(s), 2 machine(s) unreachable" in out.stderr


# value_as: name on a node that is no enumeration: a config mismatch, reported as such.
def test_validate_online_flags_value_as_name_of_a_read_non_enumeration(tmp_path: Path,
                                                                      cnc: OpcSim) -> None:
    cfg = write_config(tmp_path, cnc.port, free_port())
    (cfg / "machines.d" / "injection.yaml").unlink()
    cnc_file = cfg / "machines.d" / "cnc.yaml"
    line = len(cnc_file.read_text().splitlines()) + 2
    with cnc_file.open("a") as f:
        f.write("signals:\n  - {name: x.year.as_name, path: Identification/YearOfConstruction, "
                "poll: info, mode: read, value_as: name}\n")
    out = edge_agent("validate", "-c", str(cfg), "--online")
    no_traceback(out)
    assert out.returncode == 2, out.stdout
    assert (f"machines.d/cnc.yaml:{line}: signals[0]: x.year.as_name: the device says "
            "enum_names_unavailable") in out.stderr


def test_read_of_value_as_name_of_a_subscribed_non_enumeration_is_only_bad(tmp_path: Path,
                                                                          cnc: OpcSim) -> None:
    cfg = write_config(tmp_path, cnc.port, free_port())
    with (cfg / "machines.d" / "cnc.yaml").open("a") as f:
        f.write("signals:\n  - {name: x.speed.as_name, path: Monitoring/Spindle/ActSpeed, "
                "poll: fast, value_as: name}\n")
    out = edge_agent("read", "cnc-01", "-c", str(cfg))
    assert out.returncode == 0, out.stderr
    lines = signal_lines(out.stdout)["x.speed.as_name"]
    assert any("bad (enum_names_unavailable)" in l for l in lines), lines
    assert not [l for l in lines if "  good  " in l], lines


# -- security through the CLI -----------------------------------------------------------------


def test_browse_a_secured_server_after_trusting_its_rejected_certificate(tmp_path: Path) -> None:
    sim = OpcSim("cnc", free_port(), "--security", "all", "--pki-dir", str(tmp_path / "server"))
    try:
        pki = tmp_path / "client"
        made = edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:x:edge-agent")
        assert made.returncode == 0, made.stderr
        trust = pki / "trusted"
        args = ["browse", sim.url, "--path", "/Objects/Machines/CNC-01/Identification",
                "--depth", "1", "--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
                "--certificate", str(pki / "own" / "cert.der"),
                "--private-key", str(pki / "own" / "key.pem"), "--trust", str(trust)]

        out = edge_agent(*args)
        assert out.returncode == 1
        no_traceback(out)
        assert "is not trusted" in out.stderr
        rejected = list((pki / "rejected").iterdir())
        assert len(rejected) == 1 and rejected[0].suffix == ".der"
        assert f"it was saved as {rejected[0]}: move it to {trust} to trust it" in out.stderr
        assert out.stdout == ""
        # It is the simulator's own certificate.
        server_certs = list((tmp_path / "server").glob("*cert.der"))
        assert [p.read_bytes() for p in server_certs] == [rejected[0].read_bytes()]

        shutil.move(str(rejected[0]), trust / rejected[0].name)
        out = edge_agent(*args)
        assert out.returncode == 0, out.stderr
        assert "Manufacturer" in out.stdout and "String = 'Musterwerke" in out.stdout
        assert not any((pki / "rejected").iterdir())
    finally:
        sim.stop()


def _secure_browse_args(sim: OpcSim, pki: Path, *extra: str) -> list[str]:
    return ["browse", sim.url, "--path", "/Objects/Machines/CNC-01/Identification", "--depth", "1",
            "--policy", "Basic256Sha256", "--mode", "SignAndEncrypt",
            "--certificate", str(pki / "own" / "cert.der"),
            "--private-key", str(pki / "own" / "key.pem"), "--trust", str(pki / "trusted"), *extra]


@pytest.fixture
def secured_cnc(tmp_path: Path) -> Iterator[OpcSim]:
    sim = OpcSim("cnc", free_port(), "--security", "all", "--pki-dir", str(tmp_path / "server"))
    yield sim
    sim.stop()


def test_browse_trust_on_first_use_stores_the_server_certificate(tmp_path: Path,
                                                                 secured_cnc: OpcSim) -> None:
    pki = tmp_path / "client"
    assert edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:x:edge-agent").returncode == 0
    out = edge_agent(*_secure_browse_args(secured_cnc, pki, "--trust-on-first-use"))
    assert out.returncode == 0, out.stderr
    assert "Manufacturer" in out.stdout
    stored = list((pki / "trusted").iterdir())
    server_certs = list((tmp_path / "server").glob("*cert.der"))
    assert [p.read_bytes() for p in stored] == [p.read_bytes() for p in server_certs]
    assert not (pki / "rejected").exists()


def test_browse_announces_the_application_uri_of_its_certificate(tmp_path: Path,
                                                                 secured_cnc: OpcSim) -> None:
    pki = tmp_path / "client"
    assert edge_agent("certs", "create", "--dir", str(pki), "--uri", "urn:x:edge-agent").returncode == 0
    out = edge_agent(*_secure_browse_args(secured_cnc, pki, "--trust-on-first-use"))
    assert out.returncode == 0, out.stderr
    assert "does not contain the application uri" not in out.stderr, out.stderr
