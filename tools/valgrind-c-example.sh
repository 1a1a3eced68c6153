#!/usr/bin/env bash
# Build examples/c/generate.c (and tests/c/{misuse,lifetime,refusals}.c) against libllq.so and run them under
# valgrind on the tiny
# fixture model (token level: it has no tokenizer). Exits non-zero on leaks ("definitely
# lost"/"indirectly lost") or memory errors; "still reachable" blocks (rayon's global
# thread pool, thread-locals) are expected and allowed.
#
#   tools/valgrind-c-example.sh            (uses CARGO_TARGET_DIR or ./target, profile release)
#   PROFILE=debug tools/valgrind-c-example.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
target=${CARGO_TARGET_DIR:-$root/target}
profile=${PROFILE:-release}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

flag=()
[ "$profile" = release ] && flag=(--release)
cargo build "${flag[@]}" --lib --bin llq
libdir=$target/$profile

"$libdir/llq" convert ../shared/fixtures/tiny-llama-gqa -o "$work/tiny.llq" --type q8_0 >/dev/null
cc -std=c11 -O1 -g -Wall -Wextra -Werror -Iinclude examples/c/generate.c \
    -L"$libdir" -lllq -Wl,-rpath,"$libdir" -o "$work/generate"
# Force a small pool so valgrind's serialized threads finish quickly.
RAYON_NUM_THREADS=2 valgrind --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
    "$work/generate" "$work/tiny.llq" --ids 1,5,9,33,2 -n 8
# The misuse test program: error paths, threads, stop requests, double frees.
cc -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -Wall -Wextra -Werror -Iinclude tests/c/misuse.c \
    -L"$libdir" -lllq -Wl,-rpath,"$libdir" -lpthread -o "$work/misuse"
RAYON_NUM_THREADS=2 valgrind --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
    "$work/misuse" "$work/tiny.llq"
# Every context parameter, with the context shifting past n_ctx (tests/c/policy.c).
cc -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -Wall -Wextra -Werror -Iinclude tests/c/policy.c \
    -L"$libdir" -lllq -Wl,-rpath,"$libdir" -o "$work/policy"
RAYON_NUM_THREADS=2 valgrind --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
    "$work/policy" "$work/tiny.llq" 1,5,9 24 16 1 4 f16 0.8 42
# Lifetimes (a free refused while another thread generates; a free racing with calls) and
# refusals (non-regular files, bad ids and values). The --pool mode limits the address
# space, which valgrind's own mappings defeat: it runs in the test suite only.
for prog in lifetime refusals; do
    cc -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -Wall -Wextra -Werror -Iinclude "tests/c/$prog.c" \
        -L"$libdir" -lllq -Wl,-rpath,"$libdir" -lpthread -o "$work/$prog"
done
# Five rounds of the race: here it is checked for memory errors, and valgrind runs one thread
# at a time, so a round can take seconds to tens of seconds (20 rounds once ran over 10
# minutes); tests/ffi_c.rs runs 200 rounds natively, where the race is real.
RAYON_NUM_THREADS=2 valgrind --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
    "$work/lifetime" "$work/tiny.llq" 5
RAYON_NUM_THREADS=2 valgrind --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
    "$work/refusals" "$work/tiny.llq" - -
# 16 threads sharing the model: contexts created and freed, seeded generation checked
# against a single-threaded run, stop requests across threads, busy calls, misuse
# (tests/c/stress.c). Helgrind cannot check it: Rust's locks and rayon's pool synchronize
# through futexes, which helgrind does not see (it reports ~10^5 false races on any
# program linked with libllq); tools/tsan-c-stress.sh runs it under ThreadSanitizer.
cc -std=c11 -D_POSIX_C_SOURCE=200809L -O1 -g -Wall -Wextra -Werror -Iinclude tests/c/stress.c \
    -L"$libdir" -lllq -Wl,-rpath,"$libdir" -lpthread -o "$work/stress"
RAYON_NUM_THREADS=2 valgrind --leak-check=full --show-leak-kinds=definite,indirect \
    --errors-for-leak-kinds=definite,indirect --error-exitcode=1 \
    "$work/stress" "$work/tiny.llq" 16 3
echo "valgrind: clean"
