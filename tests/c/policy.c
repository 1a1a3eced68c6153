/*
 * Every context parameter, from C: a prompt of token ids, then generation three ways, each
 * on a fresh context, printing one line of ids per way and the stop reason:
 *
 *   generate: llq_eval(prompt), then llq_generate(NULL prompt) for N tokens (end of
 *             generation does not stop it);
 *   eval:     llq_eval(prompt), then llq_sample + llq_eval(1 token) N times;
 *   bulk:     llq_eval(prompt) and then llq_eval of all of `generate`'s ids at once: the
 *             logits after it must equal those after `eval`'s one-by-one loop (printed
 *             as "bulk <argmax>").
 *
 *   policy MODEL IDS N N_CTX SHIFT N_KEEP CACHE TEMP SEED
 *       IDS "1,2,3"; SHIFT 0|1; CACHE f32|f16|q8_0; TEMP a float; SEED an integer.
 *
 * Output (stdout):
 *   generate <ids...>
 *   stop <LLQ_STOP_* name>
 *   eval <ids...>
 *   bulk <argmax of the last logits>
 * Exits 0 when every call returned LLQ_OK (LLQ_ERR_CONTEXT_FULL from llq_eval is printed
 * as "eval-error LLQ_ERR_CONTEXT_FULL" and ends that way early).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llq.h"

#define MAX_IDS 1024

static size_t parse(const char *s, llq_token *ids) {
    size_t n = 0;
    while (*s && n < MAX_IDS) {
        char *end;
        ids[n++] = (llq_token)strtol(s, &end, 10);
        s = *end == ',' ? end + 1 : end;
    }
    return n;
}

typedef struct {
    llq_token ids[MAX_IDS];
    int n;
} collected;

static bool collect(const char *piece, size_t len, llq_token token, void *user_data) {
    (void)piece;
    (void)len;
    collected *c = user_data;
    if (token != LLQ_TOKEN_NULL && c->n < MAX_IDS) c->ids[c->n++] = token;
    return true;
}

static const char *stop_name(int r) {
    switch (r) {
    case LLQ_STOP_MAX_TOKENS: return "LLQ_STOP_MAX_TOKENS";
    case LLQ_STOP_EOG: return "LLQ_STOP_EOG";
    case LLQ_STOP_CALLBACK: return "LLQ_STOP_CALLBACK";
    case LLQ_STOP_REQUESTED: return "LLQ_STOP_REQUESTED";
    case LLQ_STOP_CONTEXT_FULL: return "LLQ_STOP_CONTEXT_FULL";
    default: return "?";
    }
}

static int fail(const char *what, llq_status s) {
    fprintf(stderr, "policy: %s: %s (%s)\n", what, llq_status_name(s), llq_last_error());
    return 1;
}

static int argmax(llq_context *ctx, int *out) {
    const float *logits = NULL;
    size_t n = 0;
    llq_status s = llq_get_logits(ctx, &logits, &n);
    if (s != LLQ_OK) return fail("llq_get_logits", s);
    size_t best = 0;
    for (size_t i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    *out = (int)best;
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 10) {
        fprintf(stderr, "usage: policy MODEL IDS N N_CTX SHIFT N_KEEP CACHE TEMP SEED\n");
        return 2;
    }
    static llq_token prompt[MAX_IDS];
    size_t n_prompt = parse(argv[2], prompt);
    int n = atoi(argv[3]);
    llq_context_params cp = llq_context_default_params();
    cp.n_ctx = (uint32_t)atoi(argv[4]);
    cp.context_shift = atoi(argv[5]) != 0;
    cp.n_keep = (uint32_t)atoi(argv[6]);
    if (!strcmp(argv[7], "f32")) cp.cache_type = LLQ_CACHE_F32;
    else if (!strcmp(argv[7], "f16")) cp.cache_type = LLQ_CACHE_F16;
    else if (!strcmp(argv[7], "q8_0")) cp.cache_type = LLQ_CACHE_Q8_0;
    else return 2;
    cp.temp = strtof(argv[8], NULL);
    cp.seed = strtoull(argv[9], NULL, 10);

    llq_model *model = NULL;
    llq_status s = llq_model_open(argv[1], llq_model_default_params(), &model);
    if (s != LLQ_OK) return fail("llq_model_open", s);

    /* generate */
    llq_context *ctx = NULL;
    if ((s = llq_context_new(model, cp, &ctx)) != LLQ_OK) return fail("llq_context_new", s);
    if ((s = llq_eval(ctx, prompt, n_prompt)) != LLQ_OK) return fail("llq_eval(prompt)", s);
    llq_generate_params gp = llq_generate_default_params();
    gp.max_tokens = n;
    gp.stop_at_eog = false;
    static collected got;
    llq_generate_result res;
    if ((s = llq_generate(ctx, NULL, gp, collect, &got, &res)) != LLQ_OK)
        return fail("llq_generate", s);
    printf("generate");
    for (int i = 0; i < got.n; i++) printf(" %d", (int)got.ids[i]);
    printf("\nstop %s\n", stop_name(res.stop_reason));
    if (res.n_tokens != got.n) {
        fprintf(stderr, "policy: n_tokens %d, callback saw %d\n", (int)res.n_tokens, got.n);
        return 1;
    }
    llq_context_free(ctx);

    /* eval, one token at a time */
    if ((s = llq_context_new(model, cp, &ctx)) != LLQ_OK) return fail("llq_context_new", s);
    if ((s = llq_eval(ctx, prompt, n_prompt)) != LLQ_OK) return fail("llq_eval(prompt)", s);
    printf("eval");
    for (int i = 0; i < n; i++) {
        llq_token t;
        if ((s = llq_sample(ctx, &t)) != LLQ_OK) return fail("llq_sample", s);
        printf(" %d", (int)t);
        s = llq_eval(ctx, &t, 1);
        if (s == LLQ_ERR_CONTEXT_FULL) {
            printf("\neval-error LLQ_ERR_CONTEXT_FULL\n");
            llq_context_free(ctx);
            llq_model_free(model);
            return 0;
        }
        if (s != LLQ_OK) return fail("llq_eval(token)", s);
    }
    int one_by_one = -1;
    if (argmax(ctx, &one_by_one)) return 1;
    printf("\n");
    llq_context_free(ctx);

    /* bulk: the prompt, then every generated token in one llq_eval */
    if ((s = llq_context_new(model, cp, &ctx)) != LLQ_OK) return fail("llq_context_new", s);
    if ((s = llq_eval(ctx, prompt, n_prompt)) != LLQ_OK) return fail("llq_eval(prompt)", s);
    if (got.n > 0 && (s = llq_eval(ctx, got.ids, (size_t)got.n)) != LLQ_OK) {
        if (s == LLQ_ERR_CONTEXT_FULL) {
            printf("bulk-error LLQ_ERR_CONTEXT_FULL\n");
            return 0;
        }
        return fail("llq_eval(bulk)", s);
    }
    int bulk = -1;
    if (argmax(ctx, &bulk)) return 1;
    printf("bulk %d %d\n", bulk, one_by_one);
    llq_context_free(ctx);
    llq_model_free(model);
    return 0;
}
