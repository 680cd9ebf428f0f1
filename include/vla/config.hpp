// vla/config.hpp — the constants of the VLA recurrence (docs/maths.md §2), with the paper's defaults.
#pragma once

#include <cmath>
#include <stdexcept>
#include <string>

namespace vla {

/// Every constant of the recurrence. An aggregate: `vla::Config cfg; cfg.lambda0 = 1.0;`.
/// Defaults are the paper's final configuration. Fields are double; a float backend rounds them
/// to float once, at the start of a call.
struct Config {
  double lambda0 = 0.1;          ///< initial penalty: A_0 = I / lambda0. Must be > 0.
  double stab_eps = 1e-4;        ///< floor of the Sherman–Morrison denominator δ. Must be > 0.
  int refresh_period = 20;       ///< add refresh_eps·I to A after every refresh_period-th step; 0 = never.
  double refresh_eps = 1e-3;     ///< size of that refresh. Must be >= 0.
  double denom_eps = 1e-4;       ///< floor of the output normaliser zᵀq. Must be > 0.
  bool normalize_output = true;  ///< o = S q / max(zᵀq, denom_eps) when true, o = S q otherwise.

  /// Throws std::invalid_argument naming the first bad field. Zero floors are rejected too:
  /// a floor of 0 admits a division by zero, which is exactly what the floors are there to stop.
  void validate() const {
    auto bad = [](const char* field, const char* why) {
      throw std::invalid_argument(std::string("vla::Config::") + field + " " + why);
    };
    if (!std::isfinite(lambda0) || !(lambda0 > 0)) bad("lambda0", "must be finite and > 0");
    if (!std::isfinite(stab_eps) || !(stab_eps > 0)) bad("stab_eps", "must be finite and > 0");
    if (refresh_period < 0) bad("refresh_period", "must be >= 0 (0 turns the refresh off)");
    if (!std::isfinite(refresh_eps) || refresh_eps < 0) bad("refresh_eps", "must be finite and >= 0");
    if (!std::isfinite(denom_eps) || !(denom_eps > 0)) bad("denom_eps", "must be finite and > 0");
  }

  /// validate(), then the same conditions after rounding to the compute scalar (float or double),
  /// where a state actually uses them: a floor that underflows to 0 in float would readmit the
  /// division by zero it exists to stop, and 1/lambda0 must stay finite.
  template <class Scalar>
  void validate_for() const {
    validate();
    auto bad = [](const char* field, const char* why) {
      throw std::invalid_argument(std::string("vla::Config::") + field + " " + why);
    };
    const char* msg = sizeof(Scalar) == 4 ? "underflows to 0 or overflows in float" : "is out of the scalar's range";
    if (!(static_cast<Scalar>(stab_eps) > 0)) bad("stab_eps", msg);
    if (!(static_cast<Scalar>(denom_eps) > 0)) bad("denom_eps", msg);
    const Scalar inv_lambda = Scalar(1) / static_cast<Scalar>(lambda0);
    if (!(static_cast<Scalar>(lambda0) > 0) || !std::isfinite(inv_lambda) || !std::isfinite(static_cast<Scalar>(lambda0)))
      bad("lambda0", msg);
    if (!std::isfinite(static_cast<Scalar>(refresh_eps))) bad("refresh_eps", msg);
  }
};

}  // namespace vla
