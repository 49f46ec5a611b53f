#include <stddef.h>
#include <stdint.h>

// libFuzzer's entry point for a program that has its own main (libclang_rt.fuzzer, linked by
// swiftc -sanitize=fuzzer). Only the fuzzing build of gptq-fuzz calls it.
int LLVMFuzzerRunDriver(int *argc, char ***argv, int (*callback)(const uint8_t *data, size_t size));
