"""Make a synthetic event log in the recorder's format (docs/replay.md): deterministic visits of a
shop — page views, scroll streams, idle, cart adds, purchases; some abandon, some convert, some come
back days later.

    .venv/bin/python bench/make_log.py OUT.jsonl.gz [--visitors 200] [--seed 7] [--days 3]

Used for the sample log shipped in examples/ and for the replay benchmark (a million events).
"""

from __future__ import annotations

import argparse
import gzip
import json
import random

PRODUCTS = [("mug", "Stoneware mug", 12.5), ("tea-towel", "Linen tea towel", 9.0), ("teapot", "Cast-iron teapot", 48.0),
            ("notebook", "Dot-grid notebook", 14.0), ("candle", "Beeswax candle", 18.0), ("throw", "Wool throw", 65.0)]
PAGES = ["/", "/article.html", "/checkout.html", "/", "/article.html"]
START = 1_700_000_000.0


def visits(n_visitors: int, seed: int, days: int):
    rng = random.Random(seed)
    for v in range(n_visitors):
        visitor = f"v_sample{v:08d}"
        at = START + rng.uniform(0, days * 86400)
        for s in range(1 + (rng.random() < 0.3) + (rng.random() < 0.1)):
            session = f"s_sample{v:06d}x{s}"
            yield {"k": "start", "t": at, "site": "pk_demo", "visitor": visitor, "session": session, "device": rng.choice(["desktop", "mobile"])}
            cart = False
            for _ in range(rng.randint(1, 6)):
                page = rng.choice(PAGES)
                at += rng.uniform(0.5, 3)
                yield {"k": "ev", "t": at, "visitor": visitor, "session": session, "name": "page_view", "props": {"path": page}}
                depth = 0
                for _ in range(rng.randint(0, 8)):
                    at += rng.uniform(0.3, 4)
                    depth = min(100, depth + rng.choice([10, 10, 20, 30]))
                    yield {"k": "ev", "t": at, "visitor": visitor, "session": session, "name": "scroll", "props": {"depth": depth}}
                if rng.random() < 0.25:
                    at += rng.uniform(1, 10)
                    pid, name, price = rng.choice(PRODUCTS)
                    cart = True
                    yield {"k": "ev", "t": at, "visitor": visitor, "session": session, "name": "add_to_cart", "props": {"id": pid, "name": name, "price": price, "quantity": 1}}
                if rng.random() < 0.15:
                    at += rng.uniform(5, 30)
                    yield {"k": "ev", "t": at, "visitor": visitor, "session": session, "name": "idle", "props": {"after": 10}}
                    at += rng.uniform(1, 60)
                    yield {"k": "ev", "t": at, "visitor": visitor, "session": session, "name": "active", "props": {}}
                at += rng.uniform(1, 20)
            if cart and rng.random() < 0.4:
                at += rng.uniform(5, 90)
                yield {"k": "ev", "t": at, "visitor": visitor, "session": session, "name": "purchase", "props": {"value": 20}}
            at += rng.uniform(1, 5)
            yield {"k": "detach", "t": at, "visitor": visitor, "session": session}
            at += rng.uniform(600, 8 * 86400)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--visitors", type=int, default=200)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    records = sorted(visits(args.visitors, args.seed, args.days), key=lambda r: r["t"])
    with gzip.open(args.out, "wt", encoding="utf-8") as out:
        out.write(json.dumps({"k": "config", "v": 1, "grace": 300, "campaigns": None, "t": None}) + "\n")
        for record in records:
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    print(f"{args.out}: {len(records)} records, {sum(r['k'] == 'ev' for r in records)} events")


if __name__ == "__main__":
    main()
