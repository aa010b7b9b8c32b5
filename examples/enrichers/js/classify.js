// Classifies support tickets with an OpenAI-compatible chat model: the answer goes into the
// record's `label`. Config: `base_url` (e.g. "http://127.0.0.1:18083/v1") and `model`.
// The API key never enters the plugin: the host fills in `${secret:openai}`.

import { Failure, http, reportUsage } from "waio";

const SYSTEM_PROMPT = `You triage customer support tickets. Answer with exactly one label and nothing else.
urgent: outage, data loss or a security problem. billing: charges, invoices, refunds, plans.
bug: something works incorrectly. other: everything else.
Labels: urgent, billing, bug, other`;

export default class Classify {
  open(config) {
    if (typeof config.base_url !== "string") throw new TypeError("config field `base_url` must be a string");
    if (typeof config.model !== "string") throw new TypeError("config field `model` must be a string");
    this.url = config.base_url.replace(/\/+$/, "") + "/chat/completions";
    this.model = config.model;
  }

  async asyncInvoke(record) {
    const ticket = record.json();
    if (typeof ticket.text !== "string") throw Failure.fatal("the ticket has no string field `text`");

    // Timeouts and connection errors reject with a retriable HttpError.
    const response = await http.post(this.url, {
      headers: { authorization: "Bearer ${secret:openai}" },
      json: {
        model: this.model,
        messages: [
          { role: "system", content: SYSTEM_PROMPT },
          { role: "user", content: ticket.text },
        ],
        temperature: 0,
        max_tokens: 3,
      },
    });
    response.throwForStatus(); // 429 and 5xx: retriable; other non-2xx: fatal

    const answer = response.json();
    if (answer.usage) {
      reportUsage(this.model, answer.usage.prompt_tokens ?? 0, answer.usage.completion_tokens ?? 0);
    }
    const label = answer.choices?.[0]?.message?.content;
    if (typeof label !== "string" || label.trim() === "") throw Failure.fatal("the model gave no answer");
    ticket.label = label.trim();
    return [record.withJson(ticket)]; // keeps the ticket's key and timestamp
  }
}
