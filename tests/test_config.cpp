// Config: docs/maths.md's defaults, and validate() naming each bad field.
#include <limits>

#include "batch.hpp"

TEST_CASE("Config defaults are docs/maths.md's (section 2)", "[config]") {
  const vla::Config c;
  CHECK(c.lambda0 == 0.1);
  CHECK(c.stab_eps == 1e-4);
  CHECK(c.refresh_period == 20);
  CHECK(c.refresh_eps == 1e-3);
  CHECK(c.denom_eps == 1e-4);
  CHECK(c.normalize_output == true);
  CHECK_NOTHROW(c.validate());
}

namespace {
// validate() must throw std::invalid_argument whose message names `field`.
void expect_rejected(const vla::Config& c, const std::string& field) {
  INFO("field " << field);
  try {
    c.validate();
    FAIL("validate() accepted a bad " << field);
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    INFO("message: " << msg);
    CHECK(msg.find(field) != std::string::npos);
  }
}
}  // namespace

TEST_CASE("Config::validate rejects each bad field by name", "[config][invalid]") {
  const double nan = std::numeric_limits<double>::quiet_NaN(), inf = std::numeric_limits<double>::infinity();
  for (double bad : {0.0, -0.1, -inf, inf, nan}) {
    vla::Config c;
    c.lambda0 = bad;
    expect_rejected(c, "lambda0");
  }
  for (double bad : {0.0, -1e-4, inf, nan}) {
    vla::Config c;
    c.stab_eps = bad;
    expect_rejected(c, "stab_eps");
  }
  for (int bad : {-1, -20, std::numeric_limits<int>::min()}) {
    vla::Config c;
    c.refresh_period = bad;
    expect_rejected(c, "refresh_period");
  }
  for (double bad : {-1e-3, -inf, inf, nan}) {
    vla::Config c;
    c.refresh_eps = bad;
    expect_rejected(c, "refresh_eps");
  }
  for (double bad : {0.0, -1e-4, inf, nan}) {
    vla::Config c;
    c.denom_eps = bad;
    expect_rejected(c, "denom_eps");
  }
}

TEST_CASE("Config::validate accepts the edges that are allowed", "[config]") {
  vla::Config c;
  c.refresh_period = 0;  // refresh off
  c.refresh_eps = 0.0;   // a refresh of size 0 is allowed
  c.normalize_output = false;
  c.lambda0 = 1e-8;
  CHECK_NOTHROW(c.validate());
  CHECK_NOTHROW(vla::VlaState<double>(4, 3, c));
  CHECK_NOTHROW(vla::VlaState<float>(4, 3, c));
}

TEST_CASE("Every state constructor validates its Config", "[config][invalid]") {
  vla::Config c;
  c.lambda0 = -1;
  CHECK_THROWS_AS(vla::VlaState<double>(4, 3, c), std::invalid_argument);
  CHECK_THROWS_AS(vla::VlaState<float>(4, 3, c), std::invalid_argument);
  vla::Config d;
  d.denom_eps = 0;
  CHECK_THROWS_AS(vla::LinearAttentionState<double>(4, 3, d), std::invalid_argument);
  // Sizes are validated too.
  CHECK_THROWS_AS(vla::VlaState<double>(0, 3), std::invalid_argument);
  CHECK_THROWS_AS(vla::VlaState<double>(4, 0), std::invalid_argument);
  CHECK_THROWS_AS(vla::VlaState<float>(-1, 3), std::invalid_argument);
  CHECK_THROWS_AS(vla::LinearAttentionState<float>(0, 3), std::invalid_argument);
  CHECK_THROWS_AS(vla::DeltaNetState<float>(3, 0), std::invalid_argument);
  CHECK_THROWS_AS(vla::PenaltyInverse<double>(0, 0.1), std::invalid_argument);
  CHECK_THROWS_AS(vla::PenaltyInverse<double>(3, 0.0), std::invalid_argument);
}

// Config fields are double; a float state rounds them once (Config::validate_for<float>). A
// refresh_eps that is finite in double but beyond FLT_MAX becomes +inf in float, and the first
// refresh would add inf to A's diagonal: float states (and the float forward) must refuse it, by
// name, while double ones accept it. FLT_MAX itself still rounds to a finite float.
TEST_CASE("a refresh_eps finite in double but overflowing float is rejected by float states only", "[config][invalid]") {
  for (double big : {1e300, 3.5e38}) {
    INFO("refresh_eps = " << big);
    vla::Config c;
    c.refresh_eps = big;
    REQUIRE_NOTHROW(c.validate());
    CHECK_NOTHROW(c.validate_for<double>());
    CHECK_NOTHROW(vla::VlaState<double>(4, 3, c));
    CHECK_THROWS_WITH(c.validate_for<float>(), Catch::Contains("refresh_eps"));
    CHECK_THROWS_WITH((vla::VlaState<float>(4, 3, c)), Catch::Contains("refresh_eps"));
    // The batched float forward refuses it before writing anything.
    vt::Batch<float> b = vt::random_batch<float>(1, 25, 1, 4, 3, 5);
    const std::vector<float> o0 = b.o;
    CHECK_THROWS_WITH(vla::forward<vla::backend::Cpu>(b.args(), c), Catch::Contains("refresh_eps"));
    CHECK(vt::bitwise_equal(b.o, o0));
  }
  vla::Config edge;
  edge.refresh_eps = double(std::numeric_limits<float>::max());
  CHECK_NOTHROW(edge.validate_for<float>());
}
