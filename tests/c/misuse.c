/*
 * Misuse of the C API must give the documented status codes, never a crash.
 *
 *   misuse MODEL      (a model; a tokenizer is not needed)
 *
 * Prints "misuse: N checks passed" and exits 0, or names the first failed check.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "llq.h"

static int checks = 0;

#define EXPECT(call, want)                                                                 \
    do {                                                                                   \
        llq_status got_ = (call);                                                          \
        checks++;                                                                          \
        if (got_ != (want)) {                                                              \
            fprintf(stderr, "misuse: line %d: %s gave %s, expected %s (%s)\n", __LINE__,   \
                    #call, llq_status_name(got_), llq_status_name(want), llq_last_error()); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define TRUE(cond)                                                                         \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "misuse: line %d: %s is false\n", __LINE__, #cond);            \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static bool stop_now(const char *p, size_t n, llq_token t, void *ud) {
    (void)p; (void)n; (void)t;
    (*(int *)ud)++;
    return false;
}

typedef struct {
    llq_context *ctx;
    volatile int seen;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} stopper;

static bool slow(const char *p, size_t n, llq_token t, void *ud) {
    (void)p; (void)n; (void)t;
    stopper *s = ud;
    pthread_mutex_lock(&s->mu);
    s->seen++;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    return true;
}

static void *request_stop(void *arg) {
    stopper *s = arg;
    pthread_mutex_lock(&s->mu);
    while (s->seen < 1) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    llq_context_request_stop(s->ctx);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    TRUE(llq_api_version() == LLQ_API_VERSION);
    TRUE(strlen(llq_version()) > 0);

    /* Opening. */
    llq_model *model = (llq_model *)1;
    EXPECT(llq_model_open(NULL, llq_model_default_params(), &model), LLQ_ERR_NULL);
    TRUE(model == NULL);
    TRUE(strlen(llq_last_error()) > 0);
    EXPECT(llq_model_open(argv[1], llq_model_default_params(), NULL), LLQ_ERR_NULL);
    EXPECT(llq_model_open("/nonexistent/model.llq", llq_model_default_params(), &model), LLQ_ERR_IO);
    llq_model_params mp = llq_model_default_params();
    mp.use_mmap = false; /* read into memory instead of mapping */
    EXPECT(llq_model_open(argv[1], mp, &model), LLQ_OK);
    TRUE(model != NULL);
    int n_vocab_in_memory = llq_model_n_vocab(model);
    EXPECT(llq_model_free(model), LLQ_OK);
    EXPECT(llq_model_open(argv[1], llq_model_default_params(), &model), LLQ_OK);
    TRUE(model != NULL);
    TRUE(strcmp(llq_model_architecture(model), "llama") == 0);
    TRUE(llq_model_n_vocab(model) > 0);
    TRUE(llq_model_n_vocab(NULL) == -1);
    TRUE(llq_model_architecture(NULL) == NULL);
    int n_vocab = llq_model_n_vocab(model);
    TRUE(n_vocab == n_vocab_in_memory);

    /* Contexts. */
    llq_context *ctx = NULL;
    llq_context_params cp = llq_context_default_params();
    cp.temp = 0.0f;
    cp.n_ctx = 16;
    EXPECT(llq_context_new(NULL, cp, &ctx), LLQ_ERR_NULL);
    EXPECT(llq_context_new((llq_model *)&cp, cp, &ctx), LLQ_ERR_INVALID_HANDLE);
    llq_context_params bad = cp;
    bad.top_k = -1;
    EXPECT(llq_context_new(model, bad, &ctx), LLQ_ERR_INVALID_ARG);
    EXPECT(llq_context_new(model, cp, &ctx), LLQ_OK);
    /* A context is not a model. */
    TRUE(llq_model_n_vocab((llq_model *)ctx) == -1);

    /* Low level. */
    llq_token tok;
    const float *logits;
    size_t n_logits;
    EXPECT(llq_sample(ctx, &tok), LLQ_ERR_INVALID_ARG);          /* nothing evaluated */
    EXPECT(llq_get_logits(ctx, &logits, &n_logits), LLQ_ERR_INVALID_ARG);
    llq_token ids[3] = {1, 2, 3};
    EXPECT(llq_eval(ctx, NULL, 3), LLQ_ERR_NULL);
    EXPECT(llq_eval(ctx, ids, 0), LLQ_ERR_INVALID_ARG);
    llq_token bad_ids[2] = {1, n_vocab};
    EXPECT(llq_eval(ctx, bad_ids, 2), LLQ_ERR_INVALID_TOKEN);
    bad_ids[1] = -5;
    EXPECT(llq_eval(ctx, bad_ids, 2), LLQ_ERR_INVALID_TOKEN);
    TRUE(llq_context_n_tokens(ctx) == 0);
    llq_token many[17] = {0};
    EXPECT(llq_eval(ctx, many, 17), LLQ_ERR_CONTEXT_FULL);
    EXPECT(llq_eval(ctx, ids, 3), LLQ_OK);
    EXPECT(llq_get_logits(ctx, &logits, &n_logits), LLQ_OK);
    TRUE((int)n_logits == n_vocab);
    EXPECT(llq_sample(ctx, NULL), LLQ_ERR_NULL);
    EXPECT(llq_sample(ctx, &tok), LLQ_OK);
    TRUE(tok >= 0 && tok < n_vocab);

    /* Generation callback that stops at once: one token reported and kept. */
    int calls = 0;
    llq_generate_params gp = llq_generate_default_params();
    gp.max_tokens = 8;
    gp.stop_at_eog = false;
    llq_generate_result res = {0};
    EXPECT(llq_generate(ctx, NULL, gp, stop_now, &calls, &res), LLQ_OK);
    TRUE(calls == 1 && res.n_tokens == 1 && res.stop_reason == LLQ_STOP_CALLBACK);
    TRUE(llq_context_n_tokens(ctx) == 4);
    gp.max_tokens = -1;
    EXPECT(llq_generate(ctx, NULL, gp, NULL, NULL, NULL), LLQ_ERR_INVALID_ARG);
    /* Fill the context: generation ends with LLQ_STOP_CONTEXT_FULL. */
    gp.max_tokens = 100;
    EXPECT(llq_generate(ctx, NULL, gp, NULL, NULL, &res), LLQ_OK);
    TRUE(res.stop_reason == LLQ_STOP_CONTEXT_FULL && llq_context_n_tokens(ctx) == 16);
    EXPECT(llq_eval(ctx, ids, 1), LLQ_ERR_CONTEXT_FULL);
    /* Text needs a tokenizer (or fails on bad UTF-8 first). */
    if (!llq_model_has_tokenizer(model)) {
        EXPECT(llq_generate(ctx, "hello", gp, NULL, NULL, NULL), LLQ_ERR_NO_TOKENIZER);
        size_t n = 0;
        EXPECT(llq_tokenize(model, "hi", 2, true, true, NULL, 0, &n), LLQ_ERR_NO_TOKENIZER);
    }

    /* Stop from another thread. */
    EXPECT(llq_context_reset(ctx), LLQ_OK);
    TRUE(llq_context_n_tokens(ctx) == 0);
    llq_context *big = NULL;
    cp.n_ctx = 512;
    EXPECT(llq_context_new(model, cp, &big), LLQ_OK);
    EXPECT(llq_eval(big, ids, 3), LLQ_OK);
    stopper st = {big, 0, PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER};
    pthread_t th;
    pthread_create(&th, NULL, request_stop, &st);
    gp.max_tokens = 400;
    EXPECT(llq_generate(big, NULL, gp, slow, &st, &res), LLQ_OK);
    pthread_join(th, NULL);
    TRUE(res.stop_reason == LLQ_STOP_REQUESTED);
    TRUE(res.n_tokens >= 1 && res.n_tokens < 400);
    EXPECT(llq_context_request_stop(NULL), LLQ_ERR_NULL);

    /* Buffers: too small reports the size, exact fits. */
    llq_chat_message msgs[2] = {{"user", "hi"}, {"assistant", "hello"}};
    const char *tmpl = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}";
    size_t need = 0;
    char small[4];
    EXPECT(llq_chat_apply_template(model, tmpl, msgs, 2, false, small, sizeof small, &need),
           LLQ_ERR_BUFFER_TOO_SMALL);
    TRUE(need == strlen("<user>hi<assistant>hello"));
    EXPECT(llq_chat_apply_template(model, tmpl, msgs, 2, false, NULL, 0, &need),
           LLQ_ERR_BUFFER_TOO_SMALL);
    char *buf = malloc(need + 1);
    EXPECT(llq_chat_apply_template(model, tmpl, msgs, 2, false, buf, need + 1, &need), LLQ_OK);
    TRUE(strcmp(buf, "<user>hi<assistant>hello") == 0);
    free(buf);
    EXPECT(llq_chat_apply_template(model, "{% for %}", msgs, 2, false, small, 4, &need),
           LLQ_ERR_TEMPLATE);
    llq_chat_message bad_msg[1] = {{"user", "\xff\xfe"}};
    EXPECT(llq_chat_apply_template(model, tmpl, bad_msg, 1, false, small, 4, &need), LLQ_ERR_UTF8);
    llq_chat_message null_msg[1] = {{"user", NULL}};
    EXPECT(llq_chat_apply_template(model, tmpl, null_msg, 1, false, small, 4, &need), LLQ_ERR_NULL);

    /* Frees: NULL is a no-op, double free is detected. */
    EXPECT(llq_context_free(NULL), LLQ_OK);
    EXPECT(llq_context_free(big), LLQ_OK);
    EXPECT(llq_context_free(big), LLQ_ERR_INVALID_HANDLE);
    EXPECT(llq_model_free((llq_model *)ctx), LLQ_ERR_INVALID_HANDLE);
    EXPECT(llq_model_free(model), LLQ_OK);
    EXPECT(llq_model_free(model), LLQ_ERR_INVALID_HANDLE);
    /* The context still works: it keeps the model alive. */
    EXPECT(llq_eval(ctx, ids, 3), LLQ_OK);
    EXPECT(llq_context_free(ctx), LLQ_OK);
    EXPECT(llq_eval(ctx, ids, 3), LLQ_ERR_INVALID_HANDLE);

    printf("misuse: %d checks passed\n", checks);
    return 0;
}
