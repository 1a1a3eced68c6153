/*
 * Two contexts on one shared model: greedy generation from two prompts, first one after
 * the other, then concurrently on two threads. The ids must be identical. Prints both
 * sequences (one line each, space-separated) and exits 0 on success.
 *
 *   threads MODEL IDS_A IDS_B N      (IDS_* as "1,2,3")
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llq.h"

#define MAX_IDS 256

typedef struct {
    llq_context *ctx;
    llq_token prompt[MAX_IDS];
    size_t n_prompt;
    int n;
    llq_token out[MAX_IDS];
    llq_status status;
} job;

static size_t parse(const char *s, llq_token *ids) {
    size_t n = 0;
    while (*s && n < MAX_IDS) {
        char *end;
        ids[n++] = (llq_token)strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

static void *run(void *arg) {
    job *j = arg;
    j->status = llq_context_reset(j->ctx);
    if (j->status == LLQ_OK) j->status = llq_eval(j->ctx, j->prompt, j->n_prompt);
    for (int i = 0; j->status == LLQ_OK && i < j->n; i++) {
        j->status = llq_sample(j->ctx, &j->out[i]);
        if (j->status == LLQ_OK && i + 1 < j->n) j->status = llq_eval(j->ctx, &j->out[i], 1);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: threads MODEL IDS_A IDS_B N\n");
        return 2;
    }
    llq_model *model = NULL;
    if (llq_model_open(argv[1], llq_model_default_params(), &model) != LLQ_OK) {
        fprintf(stderr, "threads: %s\n", llq_last_error());
        return 1;
    }
    llq_context_params cp = llq_context_default_params();
    cp.temp = 0.0f;
    cp.n_ctx = 128;
    static job seq[2], par[2];
    for (int k = 0; k < 2; k++) {
        llq_context *ctx = NULL;
        if (llq_context_new(model, cp, &ctx) != LLQ_OK) {
            fprintf(stderr, "threads: %s\n", llq_last_error());
            return 1;
        }
        seq[k].ctx = ctx;
        seq[k].n_prompt = parse(argv[2 + k], seq[k].prompt);
        seq[k].n = atoi(argv[4]);
        if (seq[k].n > MAX_IDS) seq[k].n = MAX_IDS;
    }
    /* The model handle may go now: the contexts keep the model alive. */
    if (llq_model_free(model) != LLQ_OK) return 1;

    for (int k = 0; k < 2; k++) run(&seq[k]);
    memcpy(par, seq, sizeof seq);
    pthread_t th[2];
    for (int k = 0; k < 2; k++) pthread_create(&th[k], NULL, run, &par[k]);
    for (int k = 0; k < 2; k++) pthread_join(th[k], NULL);

    int rc = 0;
    for (int k = 0; k < 2; k++) {
        if (seq[k].status != LLQ_OK || par[k].status != LLQ_OK) {
            fprintf(stderr, "threads: job %d failed: %s / %s\n", k,
                    llq_status_name(seq[k].status), llq_status_name(par[k].status));
            rc = 1;
        }
        if (memcmp(seq[k].out, par[k].out, sizeof seq[k].out) != 0) {
            fprintf(stderr, "threads: job %d differs between sequential and parallel runs\n", k);
            rc = 1;
        }
        for (int i = 0; i < seq[k].n; i++) printf(i ? " %d" : "%d", (int)seq[k].out[i]);
        printf("\n");
        llq_context_free(seq[k].ctx);
    }
    return rc;
}
