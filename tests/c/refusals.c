/*
 * What llq_model_open and llq_context_new refuse, and how they say it:
 * - paths that are not regular files (a directory, a FIFO, a character device), without
 *   blocking on the FIFO;
 * - a model whose BOS id is outside its vocabulary;
 * - temperatures that are negative, infinite or NaN;
 * - n_keep >= n_ctx, in the C API's words (not the CLI's --keep);
 * - LLQ_ERR_UNSUPPORTED for a kernel level this CPU cannot run (LLQ_KERNEL).
 *
 *   refusals MODEL BAD_BOS_MODEL BAD_BOS_ID [UNAVAILABLE_KERNEL_LEVEL]
 *       (BAD_BOS_MODEL "-": that check is skipped)
 *   refusals --pool MODEL
 *       the compute pool cannot start (address space limited with setrlimit): the error
 *       names the pool, not the model file.
 *
 * Prints "refusals: N checks passed" and exits 0, or names every failed check and exits 1.
 */
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "llq.h"

static int checks = 0, failed = 0;

/* A failed check is reported and the others still run (none of them can hang: the FIFO
 * open is under an alarm), so a run against an old library lists every gap at once. */
#define EXPECT(call, want)                                                                 \
    do {                                                                                   \
        llq_status got_ = (call);                                                          \
        checks++;                                                                          \
        if (got_ != (want)) {                                                              \
            fprintf(stderr, "refusals: line %d: %s gave %s, expected %s (%s)\n", __LINE__, \
                    #call, llq_status_name(got_), llq_status_name(want), llq_last_error()); \
            failed++;                                                                      \
        }                                                                                  \
    } while (0)

#define TRUE(cond)                                                                         \
    do {                                                                                   \
        checks++;                                                                          \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "refusals: line %d: %s is false (last error: %s)\n", __LINE__, \
                    #cond, llq_last_error());                                              \
            failed++;                                                                      \
        }                                                                                  \
    } while (0)

#define SAYS(text) TRUE(strstr(llq_last_error(), (text)) != NULL)

static void on_alarm(int sig) {
    (void)sig;
    static const char msg[] = "refusals: llq_model_open blocked (no answer in 20 s)\n";
    if (write(2, msg, sizeof msg - 1)) {}
    _exit(1);
}

/* The compute pool's start-up error is reported as itself: limit the address space to a
 * little more than what is mapped now, so the pool's first thread stack cannot be mapped. */
static int pool(const char *model_path) {
    long pages = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f || fscanf(f, "%ld", &pages) != 1) {
        fprintf(stderr, "refusals: cannot read /proc/self/statm\n");
        return 1;
    }
    fclose(f);
    rlim_t now = (rlim_t)pages * (rlim_t)sysconf(_SC_PAGESIZE);
    struct rlimit rl = {now + (1u << 20), now + (1u << 20)};
    TRUE(setrlimit(RLIMIT_AS, &rl) == 0);
    llq_model_params mp = llq_model_default_params();
    mp.n_threads = 2;
    llq_model *model = NULL;
    llq_status s = llq_model_open(model_path, mp, &model);
    EXPECT(s, LLQ_ERR_IO);
    SAYS("compute pool");
    TRUE(strstr(llq_last_error(), model_path) == NULL);
    if (failed) return 1;
    printf("refusals --pool: %d checks passed (%s)\n", checks, llq_last_error());
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "--pool") == 0) return pool(argv[2]);
    if (argc != 4 && argc != 5) return 2;
    const char *model_path = argv[1], *bad_bos = argv[2], *bad_id = argv[3];
    llq_model_params mp = llq_model_default_params();
    llq_model *model = (llq_model *)1;

    /* Paths that are not regular files. */
    char dir[] = "/tmp/llq-refusals-XXXXXX";
    TRUE(mkdtemp(dir) != NULL);
    EXPECT(llq_model_open(dir, mp, &model), LLQ_ERR_IO);
    TRUE(model == NULL);
    SAYS("is a directory, not a .llq model file");
    char fifo[64];
    snprintf(fifo, sizeof fifo, "%s/fifo.llq", dir);
    TRUE(mkfifo(fifo, 0600) == 0);
    signal(SIGALRM, on_alarm);
    alarm(20);
    EXPECT(llq_model_open(fifo, mp, &model), LLQ_ERR_IO);
    SAYS("is a FIFO (named pipe), not a .llq model file");
    mp.use_mmap = false;
    EXPECT(llq_model_open(fifo, mp, &model), LLQ_ERR_IO);
    mp.use_mmap = true;
    alarm(0);
    EXPECT(llq_model_open("/dev/null", mp, &model), LLQ_ERR_IO);
    SAYS("is a character device");
    unlink(fifo);
    rmdir(dir);

    /* Special-token ids outside the vocabulary. */
    if (strcmp(bad_bos, "-") != 0) {
        EXPECT(llq_model_open(bad_bos, mp, &model), LLQ_ERR_MODEL);
        TRUE(model == NULL);
        char want[128];
        snprintf(want, sizeof want, "BOS token id %s is outside the vocabulary (vocab size ",
                 bad_id);
        SAYS(want);
    }

    /* Kernel levels: one this CPU cannot run is unsupported. */
    if (argc == 5) {
        setenv("LLQ_KERNEL", argv[4], 1);
        EXPECT(llq_model_open(model_path, mp, &model), LLQ_ERR_UNSUPPORTED);
        SAYS("cannot run");
        unsetenv("LLQ_KERNEL");
    }

    EXPECT(llq_model_open(model_path, mp, &model), LLQ_OK);

    /* Sampling values, for every temperature that is not a finite number >= 0. */
    llq_context_params cp = llq_context_default_params();
    llq_context *ctx = (llq_context *)1;
    const float temps[] = {-1.0f, INFINITY, -INFINITY, NAN, -0.001f};
    for (size_t i = 0; i < sizeof temps / sizeof temps[0]; i++) {
        cp.temp = temps[i];
        EXPECT(llq_context_new(model, cp, &ctx), LLQ_ERR_INVALID_ARG);
        TRUE(ctx == NULL);
        SAYS("temperature");
    }
    cp.temp = 0.0f;
    EXPECT(llq_context_new(model, cp, &ctx), LLQ_OK);
    EXPECT(llq_context_free(ctx), LLQ_OK);

    /* n_keep must leave room, and the message speaks the C API (no CLI flag). */
    cp.n_ctx = 16;
    cp.context_shift = true;
    cp.n_keep = 16;
    EXPECT(llq_context_new(model, cp, &ctx), LLQ_ERR_INVALID_ARG);
    SAYS("keep");
    TRUE(strstr(llq_last_error(), "--") == NULL);
    cp.n_keep = 15;
    EXPECT(llq_context_new(model, cp, &ctx), LLQ_OK);
    EXPECT(llq_context_free(ctx), LLQ_OK);

    EXPECT(llq_model_free(model), LLQ_OK);
    EXPECT(llq_model_free(model), LLQ_ERR_INVALID_HANDLE);
    if (failed) {
        fprintf(stderr, "refusals: %d of %d checks failed\n", failed, checks);
        return 1;
    }
    printf("refusals: %d checks passed\n", checks);
    return 0;
}
