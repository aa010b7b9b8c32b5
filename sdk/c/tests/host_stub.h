/* A stand-in host for native tests of src/waio.c: the generated bindings (gen/enricher_plugin.c)
 * are compiled natively and their lowest-level imports (`__wasm_import_*`) are defined in
 * host_stub.c, which writes one line per host call into a trace. Inputs are allocated with the
 * bindings' cabi_realloc, as the host does, so AddressSanitizer checks that the SDK frees
 * exactly what the canonical ABI hands it. */
#ifndef HOST_STUB_H
#define HOST_STUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "enricher_plugin.h"

/* Appends a printf-formatted line to the trace. */
void stub_trace(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The trace since the last call (one line per entry, each ending in '\n'); resets it. The
 * string is valid until the next call. */
const char *stub_trace_take(void);

/* One input record as the host lifts it: `key` NULL for none, `has_ts` for a timestamp. */
exports_waio_enricher_enricher_event_t stub_event(const char *key, bool has_ts, int64_t ts,
                                                  const char *payload);

/* Calls the generated export `invoke-columns` as the host does, with `n` records in columns:
 * payloads[i] is record i's payload (sliced out of one buffer by the SDK), keys[i] its key (keys
 * may be NULL: no keys), timestamps[i] its timestamp, none when negative (timestamps may be NULL:
 * 1000 + i). During the call `hold(i)` traces "hold i" and hands out handle first_handle + i; it
 * aborts when no call runs or i is not a record of it. After the call, traces the result when it
 * is not empty (see trace_result in host_stub.c: "completed ...", "output-ends ...",
 * "outputs [key|ts|payload] ...", "failed i kind: message; ..."), aborting when its lists do not
 * fit together, then runs the generated post-return function, which frees it. */
void stub_invoke_columns(const char *const *keys, const int64_t *timestamps,
                         const char *const *payloads, size_t n, int32_t first_handle);
/* What `input-headers` answers from now on: `n` headers (the arrays must outlive the calls). */
void stub_set_headers(const char *const *names, const char *const *values, size_t n);
/* Calls the export `async-invoke` with one record. */
void stub_invoke_one(const char *key, const char *payload, int32_t handle);
/* Calls the export `on-response` with a 200 answer carrying `body`. */
void stub_answer(uint64_t call_id, const char *body);

/* Compares the trace since the last take with `want`; prints both and returns false when they
 * differ. */
bool stub_expect(const char *what, const char *want);

#endif
