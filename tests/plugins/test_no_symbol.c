/*
 * test_no_symbol.c - test plugin that is a valid shared object but exports
 * no module descriptor: the loader must refuse it, naming the symbol.
 */
#include <postern/postern.h>

/* Something to export, so the .so is not empty; not a descriptor. */
__attribute__((visibility("default"))) const int test_no_symbol_marker = 1;
