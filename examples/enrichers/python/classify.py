"""Classifies support tickets with an OpenAI-compatible chat model.

Each record is a ticket ({"id", "text", ...}); the answer (one of the labels) goes into `label`.
Config: `base_url` (e.g. "http://127.0.0.1:18082/v1"), `model`. The API key never enters the
plugin: the header names the secret `openai` and the host fills it in.
"""

import waio
from waio import Fatal, Request, http

SYSTEM_PROMPT = (
    "You triage customer support tickets. Answer with exactly one label and nothing else.\n"
    "urgent: outage, data loss or a security problem. billing: charges, invoices, refunds, plans.\n"
    "bug: something works incorrectly. other: everything else.\n"
    "Labels: urgent, billing, bug, other"
)


class Classify:
    def open(self, config):
        for field in ("base_url", "model"):
            if not isinstance(config.get(field), str):
                raise ValueError(f"config field `{field}` must be a string")
        self.url = config["base_url"].rstrip("/") + "/chat/completions"
        self.model = config["model"]
        self.headers = [("authorization", "Bearer ${secret:openai}")]

    async def async_invoke(self, record):
        ticket = record.json()
        text = ticket.get("text")
        if not isinstance(text, str):
            raise Fatal("ticket has no string field `text`")
        body = {
            "model": self.model,
            "temperature": 0.0,
            "max_tokens": 3,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
            ],
        }
        # Timeouts and connection failures raise a retriable HttpError; 429/5xx become retriable
        # failures in raise_for_status, every other error status a fatal one.
        resp = await http.send(Request("POST", self.url, self.headers, json=body))
        answer = resp.raise_for_status().json()
        usage = answer.get("usage") or {}
        waio.report_usage(
            self.model, usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        )
        try:
            label = answer["choices"][0]["message"]["content"].strip()
        except (KeyError, IndexError, TypeError, AttributeError):
            raise Fatal("answer has no text at choices[0].message.content") from None
        ticket["label"] = label
        return [record.with_json(ticket)]


waio.run(Classify)
