/*
 * The C API under stress: THREADS threads share one model for ITERS rounds each. Every
 * round a thread creates a context (seeded, temp > 0, shift on or off), generates from a
 * prompt of ids while a neighbour thread asks it to stop, checks that a second call on the
 * busy context gets LLQ_ERR_BUSY and that a free of the busy context is refused, checks
 * that its own llq_last_error() is not overwritten by other threads' errors, and frees the
 * context. Seeded generation must be reproducible: the first round's ids of each seed are
 * compared with a single-threaded run made before the threads start.
 *
 * Then the same calls with bad handles, NULLs and absurd sizes, from every thread at once.
 *
 *   stress MODEL THREADS ITERS
 * Prints "stress: THREADS threads x ITERS rounds, N calls, 0 errors" and exits 0, or
 * prints what failed and exits 1.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llq.h"

#define MAX_THREADS 64
#define N_GEN 12

static llq_model *model;
static int iters;
static atomic_int failures;
static atomic_long calls;
static llq_token reference[4][N_GEN];
/* Each worker's context while it generates (0 otherwise): neighbours send it stop
 * requests. Handles are never reused, so a stale one is just LLQ_ERR_INVALID_HANDLE. */
static _Atomic(uintptr_t) current[MAX_THREADS];
static int n_workers;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        atomic_fetch_add(&calls, 1);                                          \
        if (!(cond)) {                                                        \
            fprintf(stderr, "stress: %s:%d: ", __FILE__, __LINE__);           \
            fprintf(stderr, __VA_ARGS__);                                     \
            fprintf(stderr, " (last error: %s)\n", llq_last_error());         \
            atomic_fetch_add(&failures, 1);                                   \
        }                                                                     \
    } while (0)

typedef struct {
    llq_context *ctx;
    llq_token ids[N_GEN];
    int n;
    int stop_after; /* ask to stop from inside the callback after this many tokens */
    int busy_checked;
    int neighbour;  /* worker whose context this run sends a stop request, or -1 */
} run_state;

static bool on_token(const char *piece, size_t len, llq_token token, void *user_data) {
    (void)piece;
    (void)len;
    run_state *r = user_data;
    if (token == LLQ_TOKEN_NULL) return true;
    if (r->n < N_GEN) r->ids[r->n] = token;
    r->n++;
    if (!r->busy_checked) {
        /* A second call on the context while it generates, and a free of it. */
        llq_token t;
        CHECK(llq_sample(r->ctx, &t) == LLQ_ERR_BUSY, "llq_sample on a busy context");
        CHECK(llq_context_free(r->ctx) == LLQ_ERR_BUSY, "llq_context_free on a busy context");
        r->busy_checked = 1;
    }
    if (r->stop_after > 0 && r->n == r->stop_after) llq_context_request_stop(r->ctx);
    if (r->neighbour >= 0 && r->n == 3) {
        llq_context *other = (llq_context *)atomic_load(&current[r->neighbour]);
        if (other) {
            llq_status s = llq_context_request_stop(other);
            CHECK(s == LLQ_OK || s == LLQ_ERR_INVALID_HANDLE, "stop request to a neighbour: %s",
                  llq_status_name(s));
        }
    }
    return true;
}

static llq_context_params params_for(int seed_index, bool shift) {
    llq_context_params cp = llq_context_default_params();
    cp.n_ctx = 16;
    cp.temp = 0.9f;
    cp.seed = 1000 + (uint64_t)seed_index;
    cp.context_shift = shift;
    cp.cache_type = shift ? LLQ_CACHE_F16 : LLQ_CACHE_F32;
    return cp;
}

static const llq_token prompt[3] = {1, 5, 9};

/* Generate up to N_GEN ids with a fresh context of seed `seed_index`; `me` >= 0 is the
 * calling worker (its context is published for neighbours' stop requests). A run may be
 * stopped (by its own callback after `stop_after` tokens, or by a neighbour): then its ids
 * must still be a prefix of the seed's reference. Returns the number of ids. */
static int generate(int seed_index, llq_token *out, int stop_after, int me) {
    llq_context *ctx = NULL;
    llq_status s = llq_context_new(model, params_for(seed_index, true), &ctx);
    CHECK(s == LLQ_OK, "llq_context_new: %s", llq_status_name(s));
    if (s != LLQ_OK) return -1;
    s = llq_eval(ctx, prompt, 3);
    CHECK(s == LLQ_OK, "llq_eval: %s", llq_status_name(s));
    run_state r = {.ctx = ctx, .stop_after = stop_after, .neighbour = -1};
    if (me >= 0) {
        atomic_store(&current[me], (uintptr_t)ctx);
        if (n_workers > 1) r.neighbour = (me + 1) % n_workers;
    }
    llq_generate_params gp = llq_generate_default_params();
    gp.max_tokens = N_GEN;
    gp.stop_at_eog = false;
    llq_generate_result res;
    s = llq_generate(ctx, NULL, gp, on_token, &r, &res);
    if (me >= 0) atomic_store(&current[me], 0);
    CHECK(s == LLQ_OK, "llq_generate: %s", llq_status_name(s));
    CHECK(res.n_tokens == r.n, "n_tokens %d, callback saw %d", (int)res.n_tokens, r.n);
    CHECK((res.stop_reason == LLQ_STOP_MAX_TOKENS && res.n_tokens == N_GEN) ||
              (res.stop_reason == LLQ_STOP_REQUESTED && res.n_tokens <= N_GEN),
          "stop reason %d after %d tokens", (int)res.stop_reason, (int)res.n_tokens);
    if (stop_after > 0)
        CHECK(res.n_tokens <= stop_after, "own stop request after %d: %d tokens", stop_after,
              (int)res.n_tokens);
    memcpy(out, r.ids, sizeof r.ids);
    CHECK(llq_context_free(ctx) == LLQ_OK, "llq_context_free");
    return r.n;
}

/* The calls an embedding app might get wrong, all at once from every thread. */
static void misuse(void) {
    llq_context *ctx = NULL;
    llq_token t = 0;
    llq_context_params cp = llq_context_default_params();
    CHECK(llq_context_new(NULL, cp, &ctx) == LLQ_ERR_NULL, "new with a NULL model");
    CHECK(llq_context_new((llq_model *)(uintptr_t)0x12340, cp, &ctx) == LLQ_ERR_INVALID_HANDLE,
          "new with a forged model");
    cp.n_ctx = 4000000000u;
    CHECK(llq_context_new(model, cp, &ctx) == LLQ_ERR_INVALID_ARG, "absurd n_ctx");
    CHECK(ctx == NULL, "out_ctx is NULL after a failure");
    cp = llq_context_default_params();
    cp.temp = -1.0f;
    CHECK(llq_context_new(model, cp, &ctx) == LLQ_ERR_INVALID_ARG, "negative temperature");
    CHECK(llq_sample((llq_context *)(uintptr_t)0x777770, &t) == LLQ_ERR_INVALID_HANDLE,
          "sample on a forged context");
    CHECK(llq_eval(NULL, prompt, 3) == LLQ_ERR_NULL, "eval on NULL");
    llq_model_params mp = llq_model_default_params();
    mp.n_threads = 1 << 30;
    llq_model *m2 = NULL;
    CHECK(llq_model_open("/nonexistent/model.llq", mp, &m2) != LLQ_OK && m2 == NULL,
          "open a missing file with absurd n_threads");
    cp = llq_context_default_params();
    CHECK(llq_context_new(model, cp, &ctx) == LLQ_OK, "a good context");
    CHECK(llq_eval(ctx, prompt, SIZE_MAX / 2) == LLQ_ERR_INVALID_ARG, "eval of SIZE_MAX/2 ids");
    llq_token bad = 1 << 30;
    CHECK(llq_eval(ctx, &bad, 1) == LLQ_ERR_INVALID_TOKEN, "eval of an id out of the vocab");
    CHECK(llq_get_logits(ctx, NULL, NULL) == LLQ_ERR_NULL, "get_logits with NULLs");
    size_t len = 0;
    CHECK(llq_detokenize(model, prompt, 3, true, NULL, SIZE_MAX, &len) != LLQ_OK,
          "detokenize into NULL with an absurd capacity");
    CHECK(llq_context_free(ctx) == LLQ_OK, "free");
    CHECK(llq_context_free(ctx) == LLQ_ERR_INVALID_HANDLE, "double free");
}

typedef struct {
    int index;
} worker_arg;

static void *worker(void *p) {
    worker_arg *a = p;
    for (int it = 0; it < iters; it++) {
        int seed = (a->index + it) % 4;
        llq_token ids[N_GEN];
        /* Every third round is stopped from inside its callback after 5 tokens. */
        int stop_after = (it % 3 == 2) ? 5 : 0;
        int n = generate(seed, ids, stop_after, a->index);
        if (n > 0)
            CHECK(memcmp(ids, reference[seed], (size_t)n * sizeof ids[0]) == 0,
                  "seed %d: ids differ from the single-threaded run", seed);
        /* This thread's last error stays its own: make one, let others make theirs. */
        llq_token t;
        CHECK(llq_sample(NULL, &t) == LLQ_ERR_NULL, "sample(NULL)");
        char mine[256];
        snprintf(mine, sizeof mine, "%s", llq_last_error());
        CHECK(strstr(mine, "ctx") != NULL, "own last error: %s", mine);
        misuse();
        llq_sample(NULL, &t);
        CHECK(strcmp(llq_last_error(), mine) == 0, "last error changed under us: %s",
              llq_last_error());
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: stress MODEL THREADS ITERS\n");
        return 2;
    }
    int n_threads = atoi(argv[2]);
    iters = atoi(argv[3]);
    if (n_threads < 1 || n_threads > MAX_THREADS || iters < 1) return 2;
    llq_status s = llq_model_open(argv[1], llq_model_default_params(), &model);
    if (s != LLQ_OK) {
        fprintf(stderr, "stress: open: %s\n", llq_last_error());
        return 1;
    }
    for (int seed = 0; seed < 4; seed++) generate(seed, reference[seed], 0, -1);
    n_workers = n_threads;

    pthread_t threads[MAX_THREADS];
    worker_arg args[MAX_THREADS];
    for (int i = 0; i < n_threads; i++) {
        args[i] = (worker_arg){.index = i};
        pthread_create(&threads[i], NULL, worker, &args[i]);
    }
    for (int i = 0; i < n_threads; i++) pthread_join(threads[i], NULL);
    CHECK(llq_model_free(model) == LLQ_OK, "model free");
    int f = atomic_load(&failures);
    printf("stress: %d threads x %d rounds, %ld calls, %d errors\n", n_threads, iters,
           atomic_load(&calls), f);
    return f == 0 ? 0 : 1;
}
