/*
 * A minimal chat loop with libllq: one user message per line on stdin, the reply is
 * streamed to stdout. The whole conversation is rendered with the model's chat template
 * each turn; llq_generate reuses the cached prefix, so only the new turn is evaluated.
 *
 *   chat MODEL.llq [-n MAX_TOKENS] [--system "You are ..."] [--seed N] [--temp T]
 *
 * Build (from the repository root, after `cargo build --release --lib`; see docs/C_API.md):
 *   cc examples/c/chat.c -Iinclude -Ltarget/release -lllq -Wl,-rpath,"$PWD/target/release" -o chat
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llq.h"

typedef struct {
    char *data;
    size_t len, cap;
} buffer;

static int append(buffer *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = (b->len + n + 1) * 2;
        char *d = realloc(b->data, cap);
        if (!d) return 0;
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
    return 1;
}

static bool on_piece(const char *piece, size_t len, llq_token token, void *user_data) {
    (void)token;
    fwrite(piece, 1, len, stdout);
    fflush(stdout);
    return append((buffer *)user_data, piece, len) != 0;
}

static char *dup_str(const char *s) {
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

int main(int argc, char **argv) {
    const char *model_path = NULL, *system_msg = NULL;
    int max_tokens = 256;
    llq_context_params cp = llq_context_default_params();
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) max_tokens = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--system") && i + 1 < argc) system_msg = argv[++i];
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) cp.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "--temp") && i + 1 < argc) cp.temp = (float)atof(argv[++i]);
        else if (!model_path) model_path = argv[i];
        else { fprintf(stderr, "chat: unexpected argument %s\n", argv[i]); return 2; }
    }
    if (!model_path) {
        fprintf(stderr, "usage: chat MODEL [-n MAX_TOKENS] [--system TEXT] [--seed N] [--temp T]\n");
        return 2;
    }

    llq_model *model = NULL;
    llq_status s = llq_model_open(model_path, llq_model_default_params(), &model);
    if (s != LLQ_OK) {
        fprintf(stderr, "chat: %s\n", llq_last_error());
        return 1;
    }
    llq_context *ctx = NULL;
    s = llq_context_new(model, cp, &ctx);
    if (s != LLQ_OK) {
        fprintf(stderr, "chat: %s\n", llq_last_error());
        llq_model_free(model);
        return 1;
    }

    llq_chat_message msgs[256];
    size_t n_msgs = 0;
    if (system_msg) msgs[n_msgs++] = (llq_chat_message){"system", dup_str(system_msg)};

    buffer prompt = {0}, reply = {0};
    char line[4096];
    int rc = 0;
    while (n_msgs + 2 <= sizeof msgs / sizeof msgs[0] && fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        msgs[n_msgs++] = (llq_chat_message){"user", dup_str(line)};

        size_t need = 0;
        s = llq_chat_apply_template(model, NULL, msgs, n_msgs, true, prompt.data, prompt.cap, &need);
        if (s == LLQ_ERR_BUFFER_TOO_SMALL) {
            char *d = realloc(prompt.data, need + 1);
            if (!d) { rc = 1; break; }
            prompt.data = d;
            prompt.cap = need + 1;
            s = llq_chat_apply_template(model, NULL, msgs, n_msgs, true, prompt.data, prompt.cap, &need);
        }
        if (s != LLQ_OK) {
            fprintf(stderr, "chat: %s\n", llq_last_error());
            rc = 1;
            break;
        }

        llq_generate_params gp = llq_generate_default_params();
        gp.max_tokens = max_tokens;
        gp.add_special = false; /* the template writes BOS itself */
        reply.len = 0;
        if (!append(&reply, "", 0)) { rc = 1; break; }
        printf("> ");
        s = llq_generate(ctx, prompt.data, gp, on_piece, &reply, NULL);
        printf("\n");
        fflush(stdout);
        if (s != LLQ_OK) {
            fprintf(stderr, "chat: %s\n", llq_last_error());
            rc = 1;
            break;
        }
        msgs[n_msgs++] = (llq_chat_message){"assistant", dup_str(reply.data)};
    }

    for (size_t i = 0; i < n_msgs; i++) free((char *)msgs[i].content);
    free(prompt.data);
    free(reply.data);
    llq_context_free(ctx);
    llq_model_free(model);
    return rc;
}
