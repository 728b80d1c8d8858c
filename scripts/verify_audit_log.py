"""Verify a federation run's tamper-evident record; exit non-zero on any mismatch.

Given a run folder (the federation root ``DIR`` with ``state/`` and ``kits/``, or a demo
output folder holding ``federation/``), this script, using only public material:

1. verifies the hash chain and every Ed25519 signature of the coordinator's log
   (``state/coordinator/audit.log``, coordinator key) and of the key holder's log
   (``state/keyholder/audit.jsonl``, key-holder key), with the verify keys of the
   federation roster (``kits/*/roster.json``, or ``--roster``);
2. for every round the key holder decrypted (``decrypt.granted``), reloads the coordinator's
   stored submissions (``coordinator.sqlite``): each envelope must carry a valid signature
   of its site (roster key), name this round and site, and every stored ciphertext blob
   must match both its content address and the digest the site signed;
3. recomputes the round's aggregate ``Σ w_k ct_k`` with ``crypto.weighted_sum`` from those
   blobs and rebuilds the decrypt request the coordinator had to send; its digest must
   equal the ``request_digest`` the key holder logged, and the logged sites and
   normalizers must be the signed ones. A coordinator that had, say, one site's update
   decrypted instead of the aggregate is caught here;
4. cross-checks the coordinator's log: each round's accepted envelopes are the stored ones,
   and every round the coordinator applied was granted by the key holder.

Output: a JSON report on stdout (and ``--json FILE``). Exit status 0 when every check
holds, 1 on any mismatch (each named in ``failures``), 2 when the folder is unusable.

Usage: ``python scripts/verify_audit_log.py --run runs/demo``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sqlite3
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import crypto
from cipherfed.provisioning import ProvisioningError, Roster
from coordinator.blobs import BlobCorrupted, BlobStore
from coordinator.store import CoordinatorStore, StoredSubmission
from crypto.auditlog import AuditLogError, LogEntry, read_log, verify_log
from proto.wire import DecryptRequest, SignedEnvelope

logger = logging.getLogger(__name__)

COORDINATOR_LOG = "audit.log"
KEYHOLDER_LOG = "audit.jsonl"


class RunLayoutError(Exception):
    """The folder is not a federation run (a required file is missing or unreadable)."""


@dataclass(frozen=True)
class RunPaths:
    root: Path
    roster: Path
    coordinator: Path
    keyholder: Path

    @property
    def coordinator_log(self) -> Path:
        return self.coordinator / COORDINATOR_LOG

    @property
    def keyholder_log(self) -> Path:
        return self.keyholder / KEYHOLDER_LOG


@dataclass
class Report:
    checks: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append({"check": name, "ok": bool(ok), "detail": detail})
        if not ok:
            logger.error("FAILED %s: %s", name, detail)

    @property
    def failures(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c["ok"]]


def locate(run: Path, roster: Path | None = None) -> RunPaths:
    """Find the state folders and the roster of the run at ``run``."""
    root = run
    if not (root / "state").is_dir() and (root / "federation" / "state").is_dir():
        root = root / "federation"
    coord, kh = root / "state" / "coordinator", root / "state" / "keyholder"
    for p in (coord / "coordinator.sqlite", coord / COORDINATOR_LOG, kh / KEYHOLDER_LOG):
        if not p.is_file():
            raise RunLayoutError(f"{run}: missing {p.relative_to(root)} (not a federation run?)")
    if roster is None:
        found = sorted((root / "kits").glob("**/roster.json"))
        if not found:
            raise RunLayoutError(f"{run}: no kits/**/roster.json; pass --roster")
        texts = {p.read_text() for p in found}
        if len(texts) != 1:
            raise RunLayoutError(f"{run}: the kits hold {len(texts)} different rosters")
        roster = found[0]
    elif not roster.is_file():
        raise RunLayoutError(f"--roster {roster}: no such file")
    return RunPaths(root, roster, coord, kh)


def _verify_chain(report: Report, name: str, path: Path, key: bytes) -> list[LogEntry]:
    try:
        n = verify_log(path, key)
    except AuditLogError as exc:
        report.add(f"{name} log chain and signatures", False, str(exc))
        return []
    report.add(f"{name} log chain and signatures", True, f"{n} entries verified ({path})")
    return read_log(path)


def _check_submission(
    report: Report,
    roster: Roster,
    blobs: BlobStore,
    fed: str,
    rnd: int,
    sub: StoredSubmission,
) -> crypto.EncryptedUpdate | None:
    """Verify one stored update; return it rebuilt from its blobs, or None (failure logged)."""
    where = f"round {rnd}, site {sub.site_id!r}"
    entry = roster.sites.get(sub.site_id)
    if entry is None:
        report.add(f"{where}: enrolled", False, "site is not in the roster")
        return None
    try:
        env = crypto.UpdateEnvelope.from_canonical_bytes(sub.envelope)
        crypto.verify_envelope(crypto.VerifyKey.from_bytes(entry.verify_key), env, sub.signature)
    except crypto.InvalidUpdate as exc:
        report.add(f"{where}: envelope signature", False, f"does not verify: {exc}")
        return None
    problems = []
    if env.federation_id != fed or int(env.round) != rnd or env.site_id != sub.site_id:
        problems.append(
            f"envelope names {env.federation_id!r} round {env.round} site {env.site_id!r}"
        )
    if int(env.weight) != sub.weight:
        problems.append(f"stored weight {sub.weight} != signed weight {env.weight}")
    if set(int(c) for c in env.chunk_ids) != set(sub.chunk_blobs):
        problems.append(
            f"stored chunks {sorted(sub.chunk_blobs)} != signed chunks {sorted(env.chunk_ids)}"
        )
    if hashlib.sha256(sub.envelope).hexdigest() != sub.envelope_digest:
        problems.append("stored envelope digest does not match the envelope bytes")
    if problems:
        report.add(f"{where}: stored envelope matches", False, "; ".join(problems))
        return None
    signed = {int(k): str(v) for k, v in dict(env.digests).items()}
    chunks: dict[int, bytes] = {}
    for cid, name in sorted(sub.chunk_blobs.items()):
        try:
            blob = blobs.get(name)
        except KeyError:
            report.add(f"{where}: chunk {cid} blob", False, f"blob {name} is missing")
            return None
        except BlobCorrupted as exc:
            report.add(f"{where}: chunk {cid} blob", False, f"altered on disk: {exc}")
            return None
        if hashlib.sha256(blob).hexdigest() != signed.get(cid):
            report.add(
                f"{where}: chunk {cid} blob", False, "ciphertext differs from the signed digest"
            )
            return None
        chunks[cid] = blob
    report.add(f"{where}: signed update intact", True, f"{len(chunks)} chunk(s)")
    return crypto.EncryptedUpdate(chunks, env.params_fingerprint, env.layout_fingerprint)


def _accepted_by_log(entries: list[LogEntry]) -> dict[int, dict[str, str]]:
    out: dict[int, dict[str, str]] = {}
    for e in entries:
        if e.kind == "update_accepted":
            p = e.payload
            out.setdefault(int(p["round"]), {})[str(p["site"])] = str(p["envelope"])
    return out


def verify_run(paths: RunPaths) -> dict[str, Any]:
    """Run every check; the report's ``ok`` is true only when all of them hold."""
    report = Report()
    try:
        roster = Roster.from_json(paths.roster.read_text(), str(paths.roster))
    except (OSError, ProvisioningError) as exc:
        raise RunLayoutError(f"roster {paths.roster}: {exc}") from exc
    coord_log = _verify_chain(
        report, "coordinator", paths.coordinator_log, roster.coordinator.verify_key
    )
    kh_log = _verify_chain(report, "key holder", paths.keyholder_log, roster.keyholder.verify_key)

    ctx_path = paths.coordinator / "public_context.bin"
    try:
        ctx = crypto.PublicContext.from_bytes(ctx_path.read_bytes())
    except (OSError, crypto.InvalidUpdate) as exc:
        raise RunLayoutError(f"public context {ctx_path}: {exc}") from exc
    with tempfile.TemporaryDirectory(prefix="cipherfed-verify-") as tmp:
        store = _open_store_copy(paths.coordinator, Path(tmp))
        try:
            return _verify_rounds(report, paths, roster, ctx, store, coord_log, kh_log)
        finally:
            store.close()


def _open_store_copy(state: Path, tmp: Path) -> CoordinatorStore:
    """The coordinator database, opened on a private copy: the audited run is never written."""
    for suffix in ("", "-wal", "-shm"):
        src = state / f"coordinator.sqlite{suffix}"
        if src.is_file():
            shutil.copy2(src, tmp / src.name)
    try:
        return CoordinatorStore(tmp / "coordinator.sqlite")
    except sqlite3.DatabaseError as exc:
        raise RunLayoutError(f"{state / 'coordinator.sqlite'}: unreadable ({exc})") from exc


def _verify_rounds(
    report: Report,
    paths: RunPaths,
    roster: Roster,
    ctx: crypto.PublicContext,
    store: CoordinatorStore,
    coord_log: list[LogEntry],
    kh_log: list[LogEntry],
) -> dict[str, Any]:
    fed = roster.federation_id
    blobs = BlobStore(paths.coordinator / "blobs")
    layout_fp = store.get_meta("layout_fingerprint")
    if store.get_meta("federation_id") != fed:
        report.add(
            "federation id",
            False,
            f"coordinator store is for {store.get_meta('federation_id')!r}, roster for {fed!r}",
        )

    granted: dict[int, dict[str, Any]] = {}
    for e in kh_log:
        if e.kind == "decrypt.granted" and e.payload.get("federation_id") == fed:
            rnd = int(e.payload["round"])
            if rnd in granted:
                report.add(f"round {rnd}: one decryption", False, "key holder granted it twice")
            granted[rnd] = dict(e.payload)
    accepted_log = _accepted_by_log(coord_log)
    rounds_checked = []
    for rnd, grant in sorted(granted.items()):
        subs = store.submissions(rnd)
        if not subs:
            report.add(
                f"round {rnd}: submissions",
                False,
                "no stored submissions for a round the key holder decrypted",
            )
            continue
        logged = accepted_log.get(rnd, {})
        stored = {s.site_id: s.envelope_digest for s in subs}
        report.add(
            f"round {rnd}: coordinator log lists the stored updates",
            logged == stored,
            "match"
            if logged == stored
            else f"log {sorted(logged.items())} vs store {sorted(stored.items())}",
        )
        updates = [_check_submission(report, roster, blobs, fed, rnd, s) for s in subs]
        ok_updates = [u for u in updates if u is not None]
        if len(ok_updates) != len(subs):
            continue
        try:
            agg = crypto.weighted_sum(ctx, ok_updates, [s.weight for s in subs])
        except (crypto.InvalidUpdate, ValueError) as exc:
            report.add(f"round {rnd}: aggregate recomputed", False, str(exc))
            continue
        req = DecryptRequest(
            federation_id=fed,
            round=rnd,
            normalizers=dict(agg.normalizers),
            envelopes=tuple(SignedEnvelope(s.envelope, s.signature) for s in subs),
            params_fingerprint=ctx.fingerprint,
            layout_fingerprint=str(layout_fp),
            aggregate=agg.to_bytes(),
        )
        want = req.digest().hex()
        got = str(grant.get("request_digest"))
        report.add(
            f"round {rnd}: key holder decrypted the recomputed aggregate",
            want == got,
            "request digest matches"
            if want == got
            else f"key holder logged request {got[:16]}…, the stored signed updates give "
            f"{want[:16]}… (aggregate sha256 {req.aggregate_sha256[:16]}…): the coordinator "
            "asked to decrypt something other than the sum of the signed updates",
        )
        sites_ok = sorted(grant.get("sites", [])) == sorted(stored)
        report.add(
            f"round {rnd}: key-holder sites are the stored ones",
            sites_ok,
            "match" if sites_ok else f"{grant.get('sites')} vs {sorted(stored)}",
        )
        released = {int(c) for c in grant.get("released_chunks", [])}
        norms = {int(k): int(v) for k, v in dict(grant.get("normalizers", {})).items()}
        want_norms = {c: n for c, n in agg.normalizers.items() if c in released}
        report.add(
            f"round {rnd}: normalizers",
            norms == want_norms,
            "match" if norms == want_norms else f"logged {norms} vs recomputed {want_norms}",
        )
        rounds_checked.append(rnd)

    for e in coord_log:
        if e.kind == "round_done" and e.payload.get("outcome") == "applied":
            rnd = int(e.payload["round"])
            if rnd not in granted:
                report.add(
                    f"round {rnd}: decryption logged by the key holder",
                    False,
                    "the coordinator applied an aggregate the key holder never logged granting",
                )
    failures = report.failures
    return {
        "run": str(paths.root),
        "federation_id": fed,
        "rounds_verified": rounds_checked,
        "checks": report.checks,
        "failures": failures,
        "ok": not failures,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="federation run folder")
    parser.add_argument("--roster", type=Path, default=None, help="roster.json to trust")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        result = verify_run(locate(args.run, args.roster))
    except RunLayoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(result, indent=2, sort_keys=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    if not result["ok"]:
        for f in result["failures"]:
            print(f"MISMATCH: {f['check']}: {f['detail']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
