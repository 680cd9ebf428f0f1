// The Catch2 runner, alone in its translation unit (the tests are in tests/test_*.cpp).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>
