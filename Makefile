# Build and install libllq (C API). Everything is built by cargo; this only copies.
#   make                      # cargo build --release
#   make install PREFIX=/usr/local [DESTDIR=...]
#   make header               # regenerate include/llq.h (cbindgen, via the header test)
#
# The shared library's SONAME is libllq.so.$(SOMAJOR), SOMAJOR being LLQ_API_VERSION
# (build.rs sets it on Linux): it is installed under that name, with the libllq.so link
# that `-lllq` finds at link time.
PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
CARGO_TARGET_DIR ?= target
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
LIBDIR := $(CARGO_TARGET_DIR)/release
SOMAJOR := $(shell sed -n 's/^pub const LLQ_API_VERSION: i32 = \([0-9]*\);/\1/p' src/ffi/mod.rs)

.PHONY: all install uninstall header examples
all:
	$(CARGO) build --release --lib

install: all
	install -d $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/lib/pkgconfig
	install -m 644 include/llq.h $(DESTDIR)$(PREFIX)/include/llq.h
	install -m 755 $(LIBDIR)/libllq.so $(DESTDIR)$(PREFIX)/lib/libllq.so.$(SOMAJOR)
	ln -sf libllq.so.$(SOMAJOR) $(DESTDIR)$(PREFIX)/lib/libllq.so
	install -m 644 $(LIBDIR)/libllq.a $(DESTDIR)$(PREFIX)/lib/libllq.a
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(VERSION)|' llq.pc.in \
		> $(DESTDIR)$(PREFIX)/lib/pkgconfig/llq.pc

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/include/llq.h $(DESTDIR)$(PREFIX)/lib/libllq.so \
		$(DESTDIR)$(PREFIX)/lib/libllq.so.$(SOMAJOR) \
		$(DESTDIR)$(PREFIX)/lib/libllq.a $(DESTDIR)$(PREFIX)/lib/pkgconfig/llq.pc

header:
	LLQ_BLESS_HEADER=1 $(CARGO) test --test ffi_header

examples: all
	cc -O2 -Iinclude examples/c/generate.c -L$(LIBDIR) -lllq -Wl,-rpath,$(abspath $(LIBDIR)) -o $(LIBDIR)/generate
	cc -O2 -Iinclude examples/c/chat.c -L$(LIBDIR) -lllq -Wl,-rpath,$(abspath $(LIBDIR)) -o $(LIBDIR)/chat
