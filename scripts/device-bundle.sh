# Sourced by scripts/gpu-check and scripts/decode-lab (their `build` step, here: Rust, no GPU).

# bundle_cli DIR: the release CLI into DIR, with the libraries it links beyond glibc in DIR/lib
# (the GPU machine lacks libfontconfig); set LD_LIBRARY_PATH to DIR/lib there.
bundle_cli() {
    local dir=$1
    mkdir -p "$dir/lib"
    cargo build --release -p samba-lm
    cp target/release/samba-lm "$dir/samba-lm"
    strip --strip-debug "$dir/samba-lm"
    ldd target/release/samba-lm | awk '/=> \// {print $3}' \
        | grep -vE '/(libc|libm|libdl|libpthread|librt|libgcc_s|ld-linux)[.-]' \
        | xargs -r -I{} cp -L {} "$dir/lib/"
}
