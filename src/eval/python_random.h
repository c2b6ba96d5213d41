// PyRandom — a bit-exact emulation of CPython's `random.Random` (3.9–3.12) for the calls that
// generators ported from Python need: the same seed and call sequence give the same draws.
//
// What is reproduced, and from where (CPython Modules/_randommodule.c and Lib/random.py):
//   - MT19937 seeded through init_by_array with the 32-bit little-endian words of |seed|
//     (random.seed(int) / random.Random(int)); seed 0 is the one-word key {0}.
//   - getrandbits(k) for k ≤ 64: one 32-bit output per word, least significant word first, the
//     last word's surplus low bits dropped; getrandbits(0) draws nothing.
//   - randbelow(n): getrandbits(n.bit_length()) until the value is < n (so n = 1 still draws).
//   - random(): 53 bits from two outputs, (a >> 5) · 2^26 + (b >> 6), divided by 2^53.
//   - randrange(start, stop) / randint(a, b), choice, shuffle (Fisher–Yates from the end),
//     sample (set path or pool path, chosen by CPython's setsize rule), choices with and without
//     weights (unweighted: floor(random() · n); weighted: cumulative sums + bisect_right).
// Limits: integers are 64-bit (Python's are unbounded); weights are doubles, so integer weights
// are exact while their running sum stays below 2^53. Not thread-safe: one instance per thread.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

namespace vortex {

class PyRandom {
 public:
  // random.Random(seed) for an integer seed (negative seeds behave as their absolute value).
  explicit PyRandom(int64_t seed);
  // random.Random(n) for a big non-negative integer n given as 32-bit words, least significant first.
  explicit PyRandom(std::span<const uint32_t> key_words);

  uint32_t next_u32();                 // genrand_uint32: one raw MT19937 output
  uint64_t getrandbits(int bits);      // 0 ≤ bits ≤ 64
  uint64_t randbelow(uint64_t n);      // uniform in [0, n); n ≥ 1
  double random();                     // uniform in [0, 1) with 53 random bits
  int64_t randrange(int64_t start, int64_t stop);  // [start, stop), stop > start
  int64_t randint(int64_t a, int64_t b);           // [a, b], b ≥ a

  // Index of random.choice(seq) for a sequence of length n ≥ 1.
  size_t choice_index(size_t n) { return static_cast<size_t>(randbelow(checked_nonempty(n))); }

  // random.shuffle(x), in place.
  template <typename T>
  void shuffle(std::span<T> x) {
    for (size_t i = x.size(); i-- > 1;) {
      size_t j = static_cast<size_t>(randbelow(i + 1));
      std::swap(x[i], x[j]);
    }
  }
  template <typename T>
  void shuffle(std::vector<T>& x) { shuffle(std::span<T>(x)); }

  // random.sample(range(n), k): k distinct indices into a population of n, in draw order.
  // Takes CPython's set path (rejection with a set of taken indices, O(k) memory) or pool path
  // (partial Fisher–Yates over a copy of the population, O(n) memory) exactly where CPython does.
  std::vector<uint64_t> sample_indices(uint64_t n, uint64_t k);
  // True when sample(population of n, k) takes CPython's pool path.
  static bool sample_uses_pool(uint64_t n, uint64_t k);

  // random.choices(population of n, k=k): indices, each floor(random() · n).
  std::vector<size_t> choices_indices(size_t n, size_t k);
  // random.choices(population, weights=weights, k=k): indices by bisect_right on cumulative weights.
  std::vector<size_t> choices_indices(std::span<const double> weights, size_t k);

 private:
  void init_genrand(uint32_t s);
  void init_by_array(std::span<const uint32_t> key);
  void twist();
  static size_t checked_nonempty(size_t n);

  std::array<uint32_t, 624> state_{};
  size_t index_ = 624;  // next state word to temper; 624 = twist first
};

}  // namespace vortex
