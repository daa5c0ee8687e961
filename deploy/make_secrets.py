"""Fill in deploy/.env and the hashed API keys file for the compose stack, with fresh secrets.

    python deploy/make_secrets.py                 # writes deploy/.env and deploy/api-keys.json
    python deploy/make_secrets.py --out /secure   # somewhere else

Every empty secret in .env.example gets a random URL-safe value; one API key per role (client,
internal, admin, metrics) is generated, its sha256 goes to api-keys.json and the plaintext keys
are printed once. The internal one is put into .env, since services send it to each other, and
it is the platform's key: it may act for every tenant (`"tenants": ["*"]`). The metrics one is
written to `metrics-key` for Prometheus, which sends it to every service's `/metrics`.
Refuses to overwrite existing files. Standard library only.
"""

# ruff: noqa: T201  (a command-line tool: what it prints is its output)
from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROLES = ("client", "internal", "admin", "metrics")


def api_keys(tenant: str) -> tuple[dict[str, str], list[dict[str, object]]]:
    """One random key per role, and the stored form (sha256 only) for the keys file."""
    plain = {role: "rl-" + secrets.token_urlsafe(32) for role in ROLES}
    stored: list[dict[str, object]] = [
        {
            "key_id": f"{role}-1",
            "key_sha256": hashlib.sha256(key.encode()).hexdigest(),
            "tenant": tenant,
            "role": role,
        }
        for role, key in plain.items()
    ]
    for row in stored:
        if row["role"] == "internal":  # gateway and trainer call rag with each tenant's work
            row["tenants"] = ["*"]
    return plain, stored


def env_text(example: str, keys_file: Path, internal_key: str, metrics_file: Path) -> str:
    """.env.example with every empty secret filled in."""
    fixed = {
        "RAFTLOOP_API_KEYS_HOST_FILE": str(keys_file),
        "RAFTLOOP_METRICS_KEY_HOST_FILE": str(metrics_file),
        "RAFTLOOP_INTERNAL_API_KEY": internal_key,
        "JUDGE_ENDPOINT_API_KEY": internal_key,
        "HITL_ADMIN_USERNAME": "admin",
    }
    optional_empty = {"GATEWAY_UPSTREAM_URL", "GATEWAY_UPSTREAM_API_KEY", "JUDGE_MODEL"}
    lines = []
    for line in example.splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and not value and name not in optional_empty:
            value = fixed.get(name) or secrets.token_urlsafe(32)
            line = f"{name}={value}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def main(argv: list[str] | None = None) -> int:
    """Write the two files and print the plaintext API keys."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="Folder for .env and api-keys.json.")
    parser.add_argument("--tenant", default="default", help="Tenant of the generated keys.")
    args = parser.parse_args(argv)
    env_path, keys_path = args.out / ".env", args.out / "api-keys.json"
    metrics_path = args.out / "metrics-key"
    for path in (env_path, keys_path, metrics_path):
        if path.exists():
            print(f"error: {path} exists; move it away to generate new secrets", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    plain, stored = api_keys(args.tenant)
    # The keys file is mounted into containers running as uid 10001, so it must be readable.
    keys_path.write_text(json.dumps(stored, indent=2) + "\n")
    # Prometheus runs as `nobody` and reads it through a bind mount; it opens /metrics only.
    metrics_path.write_text(plain["metrics"])
    example = (HERE / ".env.example").read_text()
    env = env_text(example, keys_path.resolve(), plain["internal"], metrics_path.resolve())
    _write_private(env_path, env)
    print(f"wrote {env_path} (owner-only), {keys_path} (hashes only) and {metrics_path}")
    print("API keys (shown once; store them in your secret manager):")
    for role, key in plain.items():
        print(f"  {role}: {key}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
