"""``cipherfed provision``: CA, certificates, signing keys and kits from a federation file."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from cipherfed.config import ConfigError, load_config
from cipherfed.provisioning import ProvisioningError, provision

logger = logging.getLogger(__name__)

HELP = "create the federation CA, TLS certificates, Ed25519 signing keys and startup kits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("federation", type=Path, help="federation TOML file")
    parser.add_argument("--out", type=Path, required=True, help="output folder (must be empty)")
    parser.add_argument("--days", type=int, default=365, help="certificate validity in days")


def run(args: argparse.Namespace) -> int:
    if args.days < 1:
        print("error: --days must be >= 1", file=sys.stderr)
        return 2
    try:
        config = load_config(args.federation)
        result = provision(config, args.out, days=args.days)
    except (ConfigError, ProvisioningError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"federation {config.federation.id}: kits written to {result.out}")
    print(f"  CA (keep offline):  {result.ca_dir}")
    print(f"  coordinator kit:    {result.coordinator_kit}")
    print(f"  key holder kit:     {result.keyholder_kit}")
    for site_id, kit in result.site_kits.items():
        print(f"  site {site_id + ':':<14}{kit}")
    return 0
