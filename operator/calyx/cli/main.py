"""``calyx`` / ``kubectl calyx``: the human side of Calyx.

Every verb writes exactly what a GitOps commit could write (annotations, spec fields), so the
CLI is a convenience, never a second control path. Errors are one line and exit 1.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from calyx import __version__
from calyx.cli import guard_cmds, keys, lease_cmds, report_cmds, rollout_cmds, trust_cmds
from calyx.cli.completion import SHELLS, completion_script
from calyx.cli.context import CliContext
from calyx.cli.errors import CliError


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="calyx", description="Two-key signed canary deployments for Kubernetes."
    )
    p.add_argument("--version", action="version", version=f"calyx {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-n", "--namespace", dest="namespace_flag", help="namespace of the object")
    common.add_argument("--kubeconfig", help="path to the kubeconfig (default: $KUBECONFIG)")
    common.add_argument("--context", help="kubeconfig context")
    common.add_argument(
        "--operator-namespace",
        help="where calyx-trust and calyx-ledger live (default: $CALYX_NAMESPACE or calyx-system)",
    )
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    kg = sub.add_parser("keygen", help="create an Ed25519 key file (0600)")
    kg.add_argument("out", help="file to write the private key seed to")
    kg.add_argument("--force", action="store_true", help="overwrite an existing file")

    trust = sub.add_parser("trust", help="manage the signer trust store")
    tsub = trust.add_subparsers(dest="trust_verb", required=True, metavar="ACTION")
    ta = tsub.add_parser("add", parents=[common], help="add a signer")
    ta.add_argument("id")
    ta.add_argument("--role", required=True, choices=["human", "agent"])
    ta.add_argument("--public-key", help="base64 of the 32-byte public key")
    ta.add_argument("--key", help="derive the public key from this private key file")
    ta.add_argument(
        "--namespace-glob",
        dest="namespace",
        action="append",
        help="restrict the signer to namespaces matching this glob (repeatable)",
    )
    tsub.add_parser("list", parents=[common], help="list signers and policy")
    tr = tsub.add_parser("remove", parents=[common], help="remove a signer")
    tr.add_argument("id")

    lease = sub.add_parser("lease", help="author leases")
    lsub = lease.add_subparsers(dest="lease_verb", required=True, metavar="ACTION")
    lc = lsub.add_parser("create", parents=[common], help="print (or --apply) a new Lease")
    lc.add_argument("name")
    lc.add_argument("--target", required=True, help="Deployment to change")
    lc.add_argument("--image", action="append", required=True, metavar="CONTAINER=IMAGE")
    lc.add_argument("--intent", required=True, help="why: ticket and summary")
    lc.add_argument("--expires-in", help="e.g. 4h (default 4h)")
    lc.add_argument("--expires-at", help="RFC 3339 UTC time")
    lc.add_argument("--max-initial-weight", type=int)
    lc.add_argument("--require-analysis", type=_bool, metavar="true|false")
    lc.add_argument(
        "--rollout",
        metavar="FILE",
        help="bind this Rollout YAML (name and spec digest) in spec.rolloutRef; - for stdin",
    )
    lc.add_argument("--apply", action="store_true", help="create it in the cluster")

    ro = sub.add_parser("rollout", help="work with Rollout files")
    rsub = ro.add_subparsers(dest="rollout_verb", required=True, metavar="ACTION")
    rd = rsub.add_parser("digest", help="print a Rollout file's spec digest (for rolloutRef)")
    rd.add_argument("-f", "--file", required=True, help="Rollout YAML file, - for stdin")

    sl = sub.add_parser("sign-lease", parents=[common], help="cosign a lease")
    sl.add_argument("name", nargs="?", help="live leases.calyx.io object to sign")
    sl.add_argument("-f", "--file", help="sign this YAML file instead (pre-sign for Git)")
    sl.add_argument("-o", "--output", help="with -f: write here instead of in place")
    sl.add_argument("--key", required=True, help="private key file")
    sl.add_argument("--signer", required=True, help="your id in the trust store")
    sl.add_argument("--role", default="human", choices=["human", "agent"])

    vl = sub.add_parser("verify-lease", parents=[common], help="check a lease's cosignatures")
    vl.add_argument("name", nargs="?")
    vl.add_argument("-f", "--file")
    for verb, text in (
        ("pause-rollout", "hold at the current tier"),
        ("resume-rollout", "continue (the tier's soak restarts)"),
    ):
        pr = sub.add_parser(verb, parents=[common], help=text)
        pr.add_argument("name")
    ap = sub.add_parser("approve-next-tier", parents=[common], help="sign a tier approval")
    ap.add_argument("name")
    ap.add_argument("--key", required=True, help="private key file (a human key)")
    ap.add_argument("--signer", required=True, help="your id in the trust store")
    ap.add_argument("--to-weight", type=int, help="weight being approved (default: next tier)")
    fr = sub.add_parser("force-rollback", parents=[common], help="revert now")
    fr.add_argument("name")
    fr.add_argument("--reason", help="recorded in status, Events and the report")
    stp = sub.add_parser("status", parents=[common], help="tiers, replicas, conditions, events")
    stp.add_argument("name")
    stp.add_argument("-w", "--watch", action="store_true", help="follow until it ends")
    stp.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    rp = sub.add_parser("report", parents=[common], help="show a rollout's deployment report")
    rp.add_argument("name", nargs="?")
    rp.add_argument("--format", choices=["md", "json"], default="md")
    rp.add_argument("-f", "--file", help="a saved report.json or report ConfigMap (offline)")
    au = sub.add_parser("audit", help="the hash-chained audit trail")
    asub = au.add_subparsers(dest="audit_verb", required=True, metavar="ACTION")
    av = asub.add_parser("verify", parents=[common], help="verify a rollout's audit chain")
    av.add_argument("name", nargs="?")
    av.add_argument("-f", "--file", help="a saved audit.jsonl, report.json or ConfigMap")
    av.add_argument("--expect-head", help="the chain head you recorded elsewhere")
    gd = sub.add_parser("guard", help="the admission guard (docs/security-guard.md)")
    gsub = gd.add_subparsers(dest="guard_verb", required=True, metavar="ACTION")
    gsub.add_parser("status", parents=[common], help="is the namespace enforced; policy state")
    cp = sub.add_parser("completion", help="print a shell completion script (docs/cli.md)")
    cp.add_argument("shell", choices=SHELLS)
    dm = sub.add_parser(
        "demo", help="play a signed rollout and a rolled-back one on a throw-away local cluster"
    )
    dm.add_argument("--keep", action="store_true", help="leave everything running until Ctrl-C")
    dm.add_argument(
        "--no-build",
        action="store_true",
        help="fail instead of building the local control plane on first run",
    )
    return p


def _bool(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _ctx(args: Any) -> CliContext:
    return CliContext(
        kubeconfig=getattr(args, "kubeconfig", None),
        context=getattr(args, "context", None),
        namespace_flag=getattr(args, "namespace_flag", None),
        operator_namespace=getattr(args, "operator_namespace", None),
    )


def _name_or_file(args: Any) -> None:
    if bool(args.name) == bool(args.file):
        raise CliError("give a lease NAME or -f FILE (exactly one)")


def run(argv: Sequence[str]) -> tuple[str, int]:
    args = build_parser().parse_args(argv)
    ctx = _ctx(args)
    now = _now()
    if args.verb == "keygen":
        seed = keys.generate(Path(args.out), force=args.force)
        pub = keys.public_key_b64(seed)
        return f"wrote {args.out} (mode 0600)\npublic key: {pub}", 0
    if args.verb == "trust":
        table: dict[str, Callable[[CliContext, Any], str]] = {
            "add": trust_cmds.cmd_add,
            "list": trust_cmds.cmd_list,
            "remove": trust_cmds.cmd_remove,
        }
        return table[args.trust_verb](ctx, args), 0
    if args.verb == "lease":
        return lease_cmds.cmd_create(ctx, args, now), 0
    if args.verb == "rollout":
        return rollout_cmds.cmd_digest(args), 0
    if args.verb == "sign-lease":
        _name_or_file(args)
        return lease_cmds.cmd_sign(ctx, args, now), 0
    if args.verb == "verify-lease":
        _name_or_file(args)
        text, ok = lease_cmds.cmd_verify(ctx, args, now)
        return text, 0 if ok else 1
    if args.verb in ("pause-rollout", "resume-rollout"):
        return rollout_cmds.cmd_pause(ctx, args, paused=args.verb == "pause-rollout"), 0
    if args.verb == "approve-next-tier":
        return rollout_cmds.cmd_approve(ctx, args, now), 0
    if args.verb == "force-rollback":
        return rollout_cmds.cmd_force_rollback(ctx, args), 0
    if args.verb == "status":
        return rollout_cmds.cmd_status(ctx, args), 0
    if args.verb == "report":
        return report_cmds.cmd_report(ctx, args), 0
    if args.verb == "audit":
        text, ok = report_cmds.cmd_audit_verify(ctx, args)
        return text, 0 if ok else 1
    if args.verb == "guard":
        return guard_cmds.cmd_status(ctx, args)
    if args.verb == "completion":
        return completion_script(args.shell, build_parser(), __version__), 0
    if args.verb == "demo":
        return "", _demo_runner()(keep=args.keep, build=not args.no_build)
    raise CliError(f"unknown verb {args.verb}")


def _demo_runner() -> Callable[..., int]:
    """``calyx_dev.demo.run_demo`` from a source checkout. The demo's local cluster, simulator
    and Prometheus launcher are development tooling: they are not in the wheel or the image
    (docs/architecture.md), so an installed CLI finds them only next to its own source."""
    checkout = Path(__file__).resolve().parents[3]
    if (checkout / "calyx_dev").is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        module = importlib.import_module("calyx_dev.demo")
    except ImportError:
        raise CliError(
            "calyx demo runs from a source checkout (its local cluster is development tooling, "
            "not part of the installed package): git clone the Calyx repository and run "
            "`make demo`"
        ) from None
    run: Callable[..., int] = module.run_demo
    return run


def main(argv: Sequence[str] | None = None) -> int:
    try:
        out, code = run(sys.argv[1:] if argv is None else argv)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the API server or network: still one line
        from kubernetes.client.rest import ApiException

        from calyx.adapters.kube import api_message

        msg = api_message(exc) if isinstance(exc, ApiException) else str(exc).splitlines()[0]
        print(f"error: {type(exc).__name__}: {msg}", file=sys.stderr)
        return 1
    if out:
        print(out)
    return code


if __name__ == "__main__":
    sys.exit(main())
