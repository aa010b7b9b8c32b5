// {{name}}: a waio enricher. For each record, looks up `/kv/<id>` and stores the answer in
// `lookup`. Build with `waio plugin build`, run with `waio run --build pipeline.toml`.
import { Failure, http } from "waio";

export default class Plugin {
  open(config) {
    if (typeof config.base_url !== "string") throw new TypeError("config field `base_url` is missing");
    this.baseUrl = config.base_url;
  }

  async asyncInvoke(record) {
    const fields = record.json();
    if (fields.id === undefined) throw Failure.fatal("record has no `id`");
    const response = await http.get(`${this.baseUrl}/kv/${encodeURIComponent(String(fields.id))}`);
    response.throwForStatus(); // 429/5xx: retriable failure, other non-2xx: fatal
    fields.lookup = response.json();
    return [record.withJson(fields)];
  }
}
