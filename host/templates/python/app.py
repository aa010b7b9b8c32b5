"""{{name}}: a waio enricher. For each record, looks up `/kv/<id>` and stores the answer in
`lookup`. Build with `waio plugin build`, run with `waio run --build pipeline.toml`."""

import waio
from waio import Fatal, Request, http


class Plugin:
    def open(self, config):
        self.base_url = config["base_url"]

    async def async_invoke(self, record):
        data = record.json()
        if "id" not in data:
            raise Fatal("record has no `id`")
        resp = await http.send(Request("GET", f"{self.base_url}/kv/{data['id']}"))
        data["lookup"] = resp.raise_for_status().json()
        return [record.with_json(data)]


waio.run(Plugin)
