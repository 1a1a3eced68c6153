/*
 * LoRA adapters through the C API: two adapters opened for one model, applied to two
 * contexts of that model (run concurrently on two threads), then removed from one of
 * them. Prints three lines of greedy ids: with adapter A, with adapter B, with none.
 * Also checks the refusals (bad scale, freed handle, a model file as an adapter, an
 * adapter for another model) and that contexts keep adapters alive after
 * llq_adapter_free. Exits 0 on success.
 *
 *   lora MODEL ADAPTER_A ADAPTER_B IDS N OTHER_MODEL      (IDS as "1,2,3")
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llq.h"

#define MAX_IDS 256

typedef struct {
    llq_context *ctx;
    const llq_token *prompt;
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

static int failures = 0;

static void expect(const char *what, llq_status got, llq_status want) {
    if (got != want) {
        fprintf(stderr, "lora: %s: got %s, expected %s (%s)\n", what, llq_status_name(got),
                llq_status_name(want), llq_last_error());
        failures++;
    }
}

static void print_ids(const job *j) {
    for (int i = 0; i < j->n; i++) printf(i ? " %d" : "%d", (int)j->out[i]);
    printf("\n");
}

int main(int argc, char **argv) {
    if (argc != 7) {
        fprintf(stderr, "usage: lora MODEL ADAPTER_A ADAPTER_B IDS N OTHER_MODEL\n");
        return 2;
    }
    llq_model *model = NULL, *other = NULL;
    if (llq_model_open(argv[1], llq_model_default_params(), &model) != LLQ_OK ||
        llq_model_open(argv[6], llq_model_default_params(), &other) != LLQ_OK) {
        fprintf(stderr, "lora: %s\n", llq_last_error());
        return 1;
    }
    llq_adapter *a = NULL, *b = NULL, *bad = (llq_adapter *)1;
    expect("open A", llq_adapter_open(model, argv[2], &a), LLQ_OK);
    expect("open B", llq_adapter_open(model, argv[3], &b), LLQ_OK);
    if (!a || !b) return 1;
    /* Refusals at open: a model file is not an adapter; an adapter for another model. */
    expect("open a model file", llq_adapter_open(model, argv[1], &bad), LLQ_ERR_MODEL);
    if (bad != NULL) failures++, fprintf(stderr, "lora: out not NULL after a failure\n");
    expect("open for another model", llq_adapter_open(other, argv[2], &bad), LLQ_ERR_MODEL);
    expect("open NULL path", llq_adapter_open(model, NULL, &bad), LLQ_ERR_NULL);

    llq_context_params cp = llq_context_default_params();
    cp.temp = 0.0f;
    cp.n_ctx = 128;
    static job ja, jb;
    static llq_token prompt[MAX_IDS];
    size_t n_prompt = parse(argv[4], prompt);
    int n = atoi(argv[5]);
    if (n > MAX_IDS) n = MAX_IDS;
    llq_context *ca = NULL, *cb = NULL, *co = NULL;
    if (llq_context_new(model, cp, &ca) != LLQ_OK || llq_context_new(model, cp, &cb) != LLQ_OK ||
        llq_context_new(other, cp, &co) != LLQ_OK) {
        fprintf(stderr, "lora: %s\n", llq_last_error());
        return 1;
    }
    const llq_adapter *set_a[1] = {a}, *set_b[1] = {b};
    float one = 1.0f, nan_scale = NAN;
    expect("set A", llq_context_set_adapters(ca, set_a, &one, 1), LLQ_OK);
    expect("set B (scales NULL)", llq_context_set_adapters(cb, set_b, NULL, 1), LLQ_OK);
    /* Refusals when setting: a NaN scale, an adapter for another model's context. */
    expect("NaN scale", llq_context_set_adapters(ca, set_a, &nan_scale, 1), LLQ_ERR_INVALID_ARG);
    expect("other model's context", llq_context_set_adapters(co, set_a, NULL, 1),
           LLQ_ERR_INVALID_ARG);
    expect("NULL adapters with n = 1", llq_context_set_adapters(ca, NULL, NULL, 1), LLQ_ERR_NULL);

    /* The handles may go now: the contexts keep the adapters alive. */
    expect("free A", llq_adapter_free(a), LLQ_OK);
    expect("free B", llq_adapter_free(b), LLQ_OK);
    expect("double free", llq_adapter_free(a), LLQ_ERR_INVALID_HANDLE);
    expect("freed handle", llq_context_set_adapters(cb, set_a, NULL, 1), LLQ_ERR_INVALID_HANDLE);

    ja = (job){.ctx = ca, .prompt = prompt, .n_prompt = n_prompt, .n = n};
    jb = (job){.ctx = cb, .prompt = prompt, .n_prompt = n_prompt, .n = n};
    pthread_t th[2];
    pthread_create(&th[0], NULL, run, &ja);
    pthread_create(&th[1], NULL, run, &jb);
    pthread_join(th[0], NULL);
    pthread_join(th[1], NULL);
    expect("generate with A", ja.status, LLQ_OK);
    expect("generate with B", jb.status, LLQ_OK);
    print_ids(&ja);
    print_ids(&jb);

    /* n = 0 removes the adapters: the plain model again. */
    expect("remove", llq_context_set_adapters(ca, NULL, NULL, 0), LLQ_OK);
    run(&ja);
    expect("generate without", ja.status, LLQ_OK);
    print_ids(&ja);

    llq_context_free(ca);
    llq_context_free(cb);
    llq_context_free(co);
    llq_model_free(model);
    llq_model_free(other);
    if (failures) fprintf(stderr, "lora: %d checks failed\n", failures);
    return failures ? 1 : 0;
}
