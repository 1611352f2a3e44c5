# Sourced by the benchmarks: builds what a benchmark runs and sets
# $build_dir to the folder its binaries are in (examples in
# "$build_dir/examples").
#
#   bench_build SMOKE CARGO-BUILD-ARGS...
#
# A full run (SMOKE=0) builds only the packages it measures, in release.
# A smoke run (SMOKE=1, CI) takes the workspace's debug build instead: every
# binary and example at once, with the features `cargo test --workspace`
# resolved, so after the test stage only the links are left to do. A
# selection of packages would resolve other features and compile the
# dependencies again: minutes on CI's two cores, for every benchmark.
bench_build() {
  local smoke=$1
  shift
  if [ "$smoke" = 1 ]; then
    cargo build -q --locked --workspace --bins --examples
    build_dir=target/debug
    echo "(smoke run on the test stage's debug build: these figures are not the benchmark's)"
  else
    cargo build -q --locked --release "$@"
    build_dir=target/release
  fi
}
