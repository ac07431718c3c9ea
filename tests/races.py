"""Two writers at once, deterministically: the second starts while the first's
transaction is still open, and the first commits only after the second is waiting."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from sqlalchemy.orm import Session


def second_while_first_is_open(
    sessions: Callable[[], Session],
    first: Callable[[Session], object],
    second: Callable[[Session], object],
    pause: float = 0.5,
) -> Exception | None:
    """Run `first` in a transaction of its own and keep it open; meanwhile run `second`
    in another (a thread), then commit the first. Returns the second's exception, or
    None when it committed."""
    outcome: list[Exception | None] = []

    def run_second() -> None:
        with sessions() as db:
            try:
                second(db)
                db.commit()
                outcome.append(None)
            except Exception as exc:
                outcome.append(exc)

    with sessions() as db:
        first(db)
        thread = threading.Thread(target=run_second)
        thread.start()
        time.sleep(pause)  # the second is waiting on the first's locks by now
        db.commit()
    thread.join(30)
    assert outcome, "the second writer did not finish"
    return outcome[0]
