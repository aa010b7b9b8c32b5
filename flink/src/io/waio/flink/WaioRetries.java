package io.waio.flink;

import java.io.Serializable;
import java.time.Duration;
import java.util.function.Predicate;

import org.apache.flink.streaming.api.functions.async.AsyncRetryStrategy;
import org.apache.flink.streaming.util.retryable.AsyncRetryStrategies;

/** The retry strategy to give {@code AsyncDataStream.unorderedWaitWithRetry} with a {@link WaioAsyncFunction}. */
public final class WaioRetries {
    private WaioRetries() {}

    /**
     * Exponential backoff (doubling from {@code initialDelay} up to {@code maxDelay}) on
     * {@link WaioRetriableException} only; a {@link WaioFatalException} or anything else fails
     * the record at once.
     *
     * <p>{@code maxAttempts} is Flink's: the number of retries after the first call. Flink's async
     * timeout covers the first call and all retries: keep {@code maxAttempts * maxDelay} inside
     * it (Flink shares the backoff state among a subtask's records, so each delay is anywhere from
     * {@code initialDelay} to {@code maxDelay}). Flink stops retrying at the end of a bounded
     * input: a record failing then fails the job, and the restart strategy replays it from the
     * last checkpoint.
     */
    public static AsyncRetryStrategy<String> strategy(
            int maxAttempts, Duration initialDelay, Duration maxDelay) {
        return new AsyncRetryStrategies.ExponentialBackoffDelayRetryStrategyBuilder<String>(
                        maxAttempts, initialDelay.toMillis(), maxDelay.toMillis(), 2.0)
                .ifException(new IsRetriable())
                .build();
    }

    /** Whether a {@link WaioRetriableException} is anywhere in the cause chain. */
    public static boolean isRetriable(Throwable error) {
        // Bounded: a cause chain can be cyclic.
        for (int depth = 0; error != null && depth < 32; depth++, error = error.getCause()) {
            if (error instanceof WaioRetriableException) {
                return true;
            }
        }
        return false;
    }

    /** A class, not a lambda: the strategy is serialized with the job graph. */
    private static final class IsRetriable implements Predicate<Throwable>, Serializable {
        private static final long serialVersionUID = 1L;

        @Override
        public boolean test(Throwable error) {
            return isRetriable(error);
        }
    }
}
