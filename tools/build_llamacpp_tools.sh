#!/usr/bin/env bash
# Build llama.cpp's command-line tools (llama-imatrix, llama-quantize, llama-perplexity) from
# the llama.cpp that llama-cpp-python vendors, the same version as the benchmark venv's
# library, for the importance-matrix rows of `tools/bench_vs_llamacpp.py quality --imatrix`.
#
#   tools/build_llamacpp_tools.sh        # -> $LLQ_CACHE/llamacpp-tools/bin/llama-*
#
# The sdist comes from PyPI (pip download, no build), cmake from PyPI too; the build takes
# ~10 minutes on 2 cores and is kept in the cache. LLQ_CACHE defaults to ~/.cache/llq.
set -euo pipefail

cache="${LLQ_CACHE:-$HOME/.cache/llq}"
out="$cache/llamacpp-tools"
venv_py="${LLQ_BENCH_VENV:-$cache/venv-llamacpp}/bin/python"
version="${LLAMA_CPP_PYTHON_VERSION:-}"
if [ -z "$version" ] && [ -x "$venv_py" ]; then
  version="$("$venv_py" -c 'import llama_cpp; print(llama_cpp.__version__)' 2>/dev/null || true)"
fi
version="${version:-0.3.36}"
tools=(llama-imatrix llama-quantize llama-perplexity)

if [ -x "$out/bin/llama-imatrix" ] && [ "$(cat "$out/version" 2>/dev/null)" = "$version" ]; then
  echo "$out/bin"
  exit 0
fi
mkdir -p "$out"
if [ ! -x "$out/venv/bin/cmake" ]; then
  python3 -m venv "$out/venv"
  # scikit-build-core lets pip read the sdist's metadata without building it.
  "$out/venv/bin/pip" install -q cmake scikit-build-core >&2
fi
sdist="$out/llama_cpp_python-$version.tar.gz"
if [ ! -s "$sdist" ]; then
  echo "build_llamacpp_tools: downloading llama-cpp-python $version (sdist) from PyPI" >&2
  "$out/venv/bin/pip" download -q --no-deps --no-binary :all: --no-build-isolation \
    -d "$out" "llama-cpp-python==$version" >&2
fi
rm -rf "$out/src"
mkdir -p "$out/src"
tar xzf "$sdist" -C "$out/src" --strip-components=1
src="$out/src/vendor/llama.cpp"
echo "build_llamacpp_tools: building ${tools[*]} (llama.cpp vendored by llama-cpp-python $version)" >&2
"$out/venv/bin/cmake" -S "$src" -B "$out/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON \
  -DLLAMA_BUILD_SERVER=OFF >&2
"$out/venv/bin/cmake" --build "$out/build" -j"$(nproc)" --target "${tools[@]}" >&2
mkdir -p "$out/bin"
for t in "${tools[@]}"; do
  cp "$out/build/bin/$t" "$out/bin/"
done
# The copies find llama.cpp's shared libraries in build/bin through their RPATH: keep it.
echo "$version" > "$out/version"
echo "$out/bin"
