#!/usr/bin/env python3
"""Deterministic generator for the syncmesh quickstart ledger files.

Writes, next to this script's parent directory:
  data/ledger-0001.dat  10,000 accounts, unique ACCOUNT-IDs in ascending order
  data/ledger-0002.dat  500 records: 300 updates of accounts from file 1 (same id,
                        new balance, last amount, txn count, maybe status) and 200 new
                        accounts, in ascending id order

Layout: ../ledger.cpy (100-byte fixed records, no delimiter, ASCII text, IBM overpunch
signs in ASCII, COMP-3 balance, big-endian COMP count). Standard library only, fixed seed:
running it again produces byte-identical files.

Usage: python3 generate_ledger.py [OUTPUT_DIR]
"""

import os
import random
import sys

RECORD_LENGTH = 100
SEED = 20240601

FIRST = [
    "ANNA", "BERND", "CLARA", "DIETER", "EMMA", "FELIX", "GRETA", "HANS", "INGRID",
    "JONAS", "KATRIN", "LUKAS", "MARIA", "NIKLAS", "OLGA", "PAUL", "QUIRIN", "ROSA",
    "STEFAN", "TINA", "UWE", "VERA", "WALTER", "XAVER", "YVONNE", "ZOE", "JEAN-LUC",
    "MARIE-CLAIRE", "O'NEIL", "SIOBHAN",
]
LAST = [
    "MUELLER", "SCHMIDT", "SCHNEIDER", "FISCHER", "WEBER", "MEYER", "WAGNER", "BECKER",
    "SCHULZ", "HOFFMANN", "DUPONT", "MARTIN", "BERNARD", "ROSSI", "BIANCHI", "GARCIA",
    "FERNANDEZ", "VAN DER BERG", "DE JONG", "KOWALSKI", "NOWAK", "SMITH", "JONES",
    "O'BRIEN", "MACDONALD", "LINDQVIST", "NIEMINEN", "PAPADOPOULOS",
    "WOLFESCHLEGELSTEINHAUSENBERGERDORFF",  # longer than 30: truncated like a real export
]
BRANCHES = ["FRA1", "FRA2", "MUC1", "BER1", "HAM1", "PAR1", "LON1", "AMS1", "MIL1", "ZRH1"]
CURRENCIES = ["EUR"] * 6 + ["USD", "GBP", "CHF", "JPY"]
STATUSES = ["A"] * 16 + ["D", "D", "F", "C"]

POSITIVE = "{ABCDEFGHI"  # IBM overpunch in ASCII: +0..+9
NEGATIVE = "}JKLMNOPQR"  # -0..-9


def text(value, length):
    data = value.encode("ascii")[:length]
    return data + b" " * (length - len(data))


def unsigned_zoned(value, digits):
    assert 0 <= value < 10**digits
    return str(value).zfill(digits).encode("ascii")


def signed_zoned(unscaled, digits):
    """PIC S9(n) DISPLAY, sign overpunched in the last byte (IBM convention)."""
    assert abs(unscaled) < 10**digits
    body = str(abs(unscaled)).zfill(digits)
    last = int(body[-1])
    punch = NEGATIVE[last] if unscaled < 0 else POSITIVE[last]
    return (body[:-1] + punch).encode("ascii")


def packed(unscaled, digits):
    """PIC S9(n) COMP-3: two digits a byte, sign nibble last (C +, D -)."""
    assert abs(unscaled) < 10**digits
    nibbles = digits + 1
    if nibbles % 2:
        nibbles += 1
    body = [int(c) for c in str(abs(unscaled)).zfill(nibbles - 1)]
    body.append(0xD if unscaled < 0 else 0xC)
    return bytes((body[i] << 4) | body[i + 1] for i in range(0, len(body), 2))


def binary(value, size):
    return value.to_bytes(size, "big", signed=False)


def record(acc):
    out = b"".join([
        unsigned_zoned(acc["id"], 10),
        text(acc["branch"], 4),
        text(acc["name"], 30),
        text(acc["currency"], 3),
        packed(acc["balance"], 13),
        signed_zoned(acc["last_amount"], 11),
        binary(acc["txn_count"], 4),
        unsigned_zoned(acc["open_date"], 8),
        text(acc["status"], 1),
        b" " * 22,
    ])
    assert len(out) == RECORD_LENGTH, len(out)
    return out


def random_balance(rng):
    # Mostly modest balances, a few large ones, about 8% overdrawn.
    magnitude = rng.choice([10**4, 10**6, 10**8, 10**10, 10**12])
    value = rng.randrange(0, magnitude)
    return -value // 100 if rng.random() < 0.08 else value


def random_amount(rng):
    value = rng.randrange(1, rng.choice([10**4, 10**6, 10**9, 10**11]))
    return -value if rng.random() < 0.45 else value


def random_date(rng):
    year = rng.randrange(1975, 2025)
    month = rng.randrange(1, 13)
    day = rng.randrange(1, 29)
    return year * 10000 + month * 100 + day


def new_account(rng, account_id):
    return {
        "id": account_id,
        "branch": rng.choice(BRANCHES),
        "name": rng.choice(FIRST) + " " + rng.choice(LAST),
        "currency": rng.choice(CURRENCIES),
        "balance": random_balance(rng),
        "last_amount": random_amount(rng),
        "txn_count": rng.randrange(0, 100000),
        "open_date": random_date(rng),
        "status": rng.choice(STATUSES),
    }


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    out_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "..", "data")
    os.makedirs(out_dir, exist_ok=True)
    rng = random.Random(SEED)

    accounts = []
    account_id = 1000000000
    for _ in range(10000):
        account_id += rng.randrange(1, 50000)
        accounts.append(new_account(rng, account_id))
    # Edge cases a decoder must get right, at fixed positions.
    accounts[0]["balance"] = 0
    accounts[0]["last_amount"] = 0
    accounts[1]["balance"] = -1
    accounts[1]["last_amount"] = -1
    accounts[2]["balance"] = 10**13 - 1  # 99999999999.99
    accounts[2]["last_amount"] = -(10**11 - 1)  # -999999999.99
    accounts[3]["txn_count"] = 99999
    with open(os.path.join(out_dir, "ledger-0001.dat"), "wb") as f:
        for acc in accounts:
            f.write(record(acc))

    updated = sorted(rng.sample(range(len(accounts)), 300))
    batch = []
    for index in updated:
        acc = dict(accounts[index])
        amount = random_amount(rng)
        acc["last_amount"] = amount
        acc["balance"] = max(min(acc["balance"] + amount, 10**13 - 1), -(10**13 - 1))
        acc["txn_count"] = min(acc["txn_count"] + 1, 99999)
        if rng.random() < 0.05:
            acc["status"] = rng.choice(STATUSES)
        batch.append(acc)
    account_id = accounts[-1]["id"]
    for _ in range(200):
        account_id += rng.randrange(1, 50000)
        batch.append(new_account(rng, account_id))
    batch.sort(key=lambda a: a["id"])
    with open(os.path.join(out_dir, "ledger-0002.dat"), "wb") as f:
        for acc in batch:
            f.write(record(acc))


if __name__ == "__main__":
    main()
