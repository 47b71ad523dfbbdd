"""graphite-web's render API, as the kit asks it: one POST, asked again while a series' file is
being created, the answer's datapoints by target (:mod:`nirvana.graphite` reads counters with it).
"""

import time
from typing import Sequence

import requests

from .errors import GraphiteError, GraphiteUnavailable

HTTP_TIMEOUT = 2.0      # seconds per render request: graphite-web answers locally in ms
# Pauses (seconds) before a render answered with a 5xx is asked again: carbon creates a new series'
# whisper file in place, and graphite-web reading it before whisper has written its header raises
# CorruptWhisperFile ("Unable to read header") and answers HTTP 500 for the whole render (its
# exception.log; seen in a suite run at a load of ~15, the first read of a counter just sent). The
# header follows the file's creation within milliseconds: 1.75 s of retries, then the error.
RENDER_RETRIES = (0.25, 0.5, 1.0)


def post_render(url: str, params: Sequence[tuple[str, str]]) -> requests.Response:
    """POST ``params`` (``[(name, value)]``: target, from, until, format...) to graphite-web's render
    API at ``url``; its answer. An answer with a 5xx is asked again after each pause of
    RENDER_RETRIES (a series' whisper file read while carbon creates it); the last answer is
    returned whatever its status. Raises GraphiteUnavailable (one line, with the command that starts
    the stack) when nothing answers within HTTP_TIMEOUT seconds."""
    for pause in (*RENDER_RETRIES, None):
        try:
            response = requests.post(f"{url}/render", data=list(params), timeout=HTTP_TIMEOUT)
        except requests.RequestException as error:
            raise GraphiteUnavailable(
                f"graphite-web is not answering at {url} ({type(error).__name__}): start the stack with `./kit up`"
            ) from None
        if response.status_code < 500 or pause is None:
            break
        time.sleep(pause)
    return response


def datapoints(response: requests.Response, url: str, count: int) -> dict[str, list]:
    """{target: datapoints} of a render answer; GraphiteError (one line) for an error or non-JSON."""
    what = f"graphite-web at {url} answered the render query for {count} counter(s)"
    if response.status_code != 200:
        first = next(iter(response.text.strip().splitlines()), "")[:200]
        raise GraphiteError(f"{what} with HTTP {response.status_code} {response.reason}: {first}")
    try:
        return {item["target"]: item["datapoints"] for item in response.json()}
    except (ValueError, TypeError, KeyError):
        raise GraphiteError(f"{what} with something else than the render API's JSON") from None


__all__ = ["post_render", "datapoints", "HTTP_TIMEOUT", "RENDER_RETRIES"]
