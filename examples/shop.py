"""An example shop: the jobs a small web shop runs in the background.

The code names no backend: `jobkit worker` and the quickstart choose it by configuration.
Some jobs fail on purpose, so the quickstart can show retries, dead letters and time limits.
"""

from __future__ import annotations

import time
from datetime import timedelta

from jobkit import App, Reject, RetryPolicy, current_job

app = App("shop")

# Short backoffs so the demo finishes in seconds; production code would keep the defaults.
QUICK = RetryPolicy(max_attempts=4, backoff_base=timedelta(seconds=0.2), jitter=0.5)


@app.job(queue="shop", retry=QUICK)
def send_receipt(order_id: int, email: str) -> str:
    """Always works."""
    return f"receipt for order {order_id} sent to {email}"


@app.job(queue="shop", retry=QUICK)
def charge_card(order_id: int, cents: int) -> dict[str, int]:
    """Every fifth order's payment provider times out twice before it works."""
    ctx = current_job()
    attempt = ctx.attempt if ctx else 1
    if order_id % 5 == 0 and attempt < 3:
        raise TimeoutError(f"payment provider timed out (attempt {attempt})")
    return {"order_id": order_id, "charged": cents}


@app.job(queue="shop", retry=QUICK)
def reserve_stock(sku: str) -> str:
    """An unknown SKU can never succeed: rejected at once, no retries."""
    if sku.startswith("GONE-"):
        raise Reject(f"SKU {sku} no longer exists")
    return f"reserved {sku}"


@app.job(queue="shop", retry=QUICK)
def notify_partner(order_id: int) -> None:
    """The partner's API is down all day: every attempt fails, then it is dead-lettered."""
    raise ConnectionError("partner API unreachable")


@app.job(queue="shop", retry=RetryPolicy(max_attempts=1), time_limit=timedelta(seconds=1))
def build_invoice_pdf(order_id: int, pages: int) -> str:
    """Huge invoices hang the renderer; the time limit stops them."""
    time.sleep(0.05 * pages)
    return f"invoice for order {order_id}: {pages} pages"


@app.job(queue="shop", retry=QUICK)
def ask_for_review(order_id: int) -> str:
    """Sent a while after the order (a delayed job)."""
    return f"review request for order {order_id}"
