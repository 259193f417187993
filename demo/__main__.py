"""make demo: one issuer's order of cards through every stage of the bureau, then a mobile
operator's order of SIMs (USIM personalised through the same secure channel, authenticated at
QA as the operator's network would).

    python -m demo [--cards 50] [--issuer demo-bank] [--sims 5]

The local stack and the services must be up (make demo does that first, and loads the demo
issuer's test keys by key ceremony before keymgmt starts).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from demo.client import DEMO_OP, Bureau, demo_cards
from demo.progress import StageView

PRODUCT = "demo-debit"
SIM_OPERATOR, SIM_PRODUCT = "demo-mno", "demo-usim"
STAGES = [
    "ordered",
    "prepared",
    "encoded",
    "printed",
    "qa_passed",
    "packed",
    "dispatched",
    "spoiled_electrical",
    "spoiled_graphical",
    "qa_failed",
    "destroyed",
]


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


async def run(cards: int, issuer: str, sims: int) -> int:
    bureau = Bureau()
    failed = await run_batch(bureau, issuer, "Demo Bank", PRODUCT, "emv", cards)
    if sims:
        say("")
        failed |= await run_batch(bureau, SIM_OPERATOR, "Demo Mobile", SIM_PRODUCT, "sim", sims)
    return failed


async def run_batch(
    bureau: Bureau, issuer: str, name: str, product: str, kind: str, cards: int
) -> int:
    say(f"Onboarding issuer {issuer!r} with {kind.upper()} product {product!r} ...")
    token = await bureau.onboard_issuer(issuer, name, product, kind=kind, cards=cards)
    operator = None
    if kind == "sim":
        operator = await bureau.sim_product(issuer, product, imsi_prefix="00101")
        say(
            f"  SIM product in keymgmt: transport key {operator.transport_label}"
            f" (KCV {operator.kcv}) received by the operator under its RSA key"
        )
    say(f"Receiving {cards} blank cards into the vault ...")
    await bureau.receive_stock(issuer, product, cards)
    say(f"Issuer posts an order of {cards} cards ...")
    order = await bureau.post_order(token, product, demo_cards(cards, seed=int(time.time())))
    batch = str(order["batch_id"])
    say(f"  order {order['order_id']} accepted as batch {batch}")
    say("  first cards: " + ", ".join(c["masked_pan"] for c in order["cards"][:3]) + " ...")
    say("Cards moving through keymgmt -> electrical -> graphical -> qa -> fulfillment:")
    with StageView(cards) as live:
        view = await bureau.wait_for_batch(batch, {"reconciled", "closed", "held"}, 600, live.show)
        if view["status"] != "held":
            view = await bureau.wait_for_batch(batch, {"closed"}, 300, live.show)
    if view["status"] == "held":
        say(f"Batch HELD by audit: {view['problems']} missing={view['missing']}")
        return 1
    say("")
    say(f"Batch {batch} reconciliation ({view['status']}):")
    counts = view["counts"]
    for stage in [k for k in STAGES if k in counts] + sorted(set(counts) - set(STAGES)):
        count = counts[stage]
        say(f"  {stage:<28} {count}")
    discrepancies = len(view["problems"]) + sum(len(v) for v in view["missing"].values())
    say(f"  discrepancies: {discrepancies}")
    if operator is not None:
        text = await bureau.sim_output_file(batch, token)
        sims = operator.open_output_file(text, DEMO_OP)
        say("Operator fetched its output file with its own token, opened it with its key:")
        say(f"  {len(sims)} SIMs")
        for sim in sims[:3]:
            say(f"  ICCID {sim['iccid']}  IMSI {sim['imsi']}  Ki/OPc unwrapped, OPc checked")
    return 0 if discrepancies == 0 else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cards", type=int, default=50)
    parser.add_argument("--issuer", default="demo-bank")
    parser.add_argument("--sims", type=int, default=5, help="then a mobile operator's SIMs")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(args.cards, args.issuer, args.sims)))


if __name__ == "__main__":
    main()
