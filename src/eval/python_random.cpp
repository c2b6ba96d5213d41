// CPython random.Random emulation: MT19937 core and the Lib/random.py methods built on it.
#include "eval/python_random.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <numeric>
#include <unordered_set>

#include "core/error.h"

namespace vortex {
namespace {

constexpr size_t kStateWords = 624;  // MT19937 N
constexpr size_t kShift = 397;       // MT19937 M
constexpr uint32_t kMatrixA = 0x9908b0dfu;
constexpr uint32_t kUpperMask = 0x80000000u;
constexpr uint32_t kLowerMask = 0x7fffffffu;

// The 32-bit words of |seed|, least significant first; {0} for seed 0 (as CPython's random_seed).
std::vector<uint32_t> seed_words(int64_t seed) {
  uint64_t magnitude = seed < 0 ? uint64_t{0} - static_cast<uint64_t>(seed) : static_cast<uint64_t>(seed);
  std::vector<uint32_t> words{static_cast<uint32_t>(magnitude)};
  if (magnitude >> 32) words.push_back(static_cast<uint32_t>(magnitude >> 32));
  return words;
}

}  // namespace

PyRandom::PyRandom(int64_t seed) {
  std::vector<uint32_t> words = seed_words(seed);
  init_by_array(words);
}

PyRandom::PyRandom(std::span<const uint32_t> key_words) {
  // CPython drops high zero words (the key is the integer's minimal little-endian form).
  size_t used = key_words.size();
  while (used > 1 && key_words[used - 1] == 0) --used;
  if (used == 0) {
    const uint32_t zero = 0;
    init_by_array(std::span<const uint32_t>(&zero, 1));
  } else {
    init_by_array(key_words.first(used));
  }
}

void PyRandom::init_genrand(uint32_t s) {
  state_[0] = s;
  for (size_t i = 1; i < kStateWords; ++i) {
    state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
  index_ = kStateWords;
}

void PyRandom::init_by_array(std::span<const uint32_t> key) {
  init_genrand(19650218u);
  size_t i = 1, j = 0;
  for (size_t k = std::max(kStateWords, key.size()); k > 0; --k) {
    state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1664525u)) + key[j] + static_cast<uint32_t>(j);
    ++i;
    ++j;
    if (i >= kStateWords) {
      state_[0] = state_[kStateWords - 1];
      i = 1;
    }
    if (j >= key.size()) j = 0;
  }
  for (size_t k = kStateWords - 1; k > 0; --k) {
    state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1566083941u)) - static_cast<uint32_t>(i);
    ++i;
    if (i >= kStateWords) {
      state_[0] = state_[kStateWords - 1];
      i = 1;
    }
  }
  state_[0] = 0x80000000u;  // MSB is 1, assuring a non-zero initial array
  index_ = kStateWords;
}

void PyRandom::twist() {
  auto mix = [](uint32_t upper, uint32_t lower, uint32_t far) {
    uint32_t y = (upper & kUpperMask) | (lower & kLowerMask);
    return far ^ (y >> 1) ^ ((y & 1u) ? kMatrixA : 0u);
  };
  for (size_t k = 0; k < kStateWords; ++k) {
    state_[k] = mix(state_[k], state_[(k + 1) % kStateWords], state_[(k + kShift) % kStateWords]);
  }
  index_ = 0;
}

uint32_t PyRandom::next_u32() {
  if (index_ >= kStateWords) twist();
  uint32_t y = state_[index_++];
  y ^= (y >> 11);
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= (y >> 18);
  return y;
}

uint64_t PyRandom::getrandbits(int bits) {
  check(bits >= 0 && bits <= 64, "internal: getrandbits({}) is outside 0..64", bits);
  if (bits == 0) return 0;
  if (bits <= 32) return next_u32() >> (32 - bits);
  uint64_t low = next_u32();                                // least significant word first
  uint64_t high = next_u32() >> (64 - bits);                // surplus low bits of the last word dropped
  return low | (high << 32);
}

uint64_t PyRandom::randbelow(uint64_t n) {
  check(n >= 1, "internal: randbelow(0)");
  int bits = std::bit_width(n);  // n.bit_length(), not (n - 1)'s: randbelow(1) still draws
  uint64_t r = getrandbits(bits);
  while (r >= n) r = getrandbits(bits);
  return r;
}

double PyRandom::random() {
  uint32_t a = next_u32() >> 5, b = next_u32() >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

int64_t PyRandom::randrange(int64_t start, int64_t stop) {
  check(stop > start, "internal: empty range for randrange({}, {})", start, stop);
  uint64_t width = static_cast<uint64_t>(stop) - static_cast<uint64_t>(start);
  return static_cast<int64_t>(static_cast<uint64_t>(start) + randbelow(width));
}

int64_t PyRandom::randint(int64_t a, int64_t b) {
  check(b >= a && b < INT64_MAX, "internal: empty range for randint({}, {})", a, b);
  return randrange(a, b + 1);
}

size_t PyRandom::checked_nonempty(size_t n) {
  check(n > 0, "internal: choice from an empty sequence");
  return n;
}

bool PyRandom::sample_uses_pool(uint64_t n, uint64_t k) {
  // setsize = 21 + 4 ** ceil(log(3k, 4)) for k > 5, with math.log(x, base) = log(x) / log(base).
  uint64_t setsize = 21;
  if (k > 5) {
    double exponent = std::ceil(std::log(static_cast<double>(k * 3)) / std::log(4.0));
    if (exponent >= 31) return true;  // 4 ** 31 exceeds any population we can index
    setsize += uint64_t{1} << (2 * static_cast<int>(exponent));
  }
  return n <= setsize;
}

std::vector<uint64_t> PyRandom::sample_indices(uint64_t n, uint64_t k) {
  check(k <= n, "internal: sample of {} from a population of {}", k, n);
  std::vector<uint64_t> result(k);
  if (sample_uses_pool(n, k)) {
    std::vector<uint64_t> pool(n);
    std::iota(pool.begin(), pool.end(), uint64_t{0});
    for (uint64_t i = 0; i < k; ++i) {
      uint64_t j = randbelow(n - i);
      result[i] = pool[j];
      pool[j] = pool[n - i - 1];  // move the non-selected item into the vacancy
    }
    return result;
  }
  std::unordered_set<uint64_t> selected;
  selected.reserve(k);
  for (uint64_t i = 0; i < k; ++i) {
    uint64_t j = randbelow(n);
    while (selected.contains(j)) j = randbelow(n);
    selected.insert(j);
    result[i] = j;
  }
  return result;
}

std::vector<size_t> PyRandom::choices_indices(size_t n, size_t k) {
  std::vector<size_t> result(k);
  double count = static_cast<double>(n);
  for (size_t i = 0; i < k; ++i) result[i] = static_cast<size_t>(std::floor(random() * count));
  return result;
}

std::vector<size_t> PyRandom::choices_indices(std::span<const double> weights, size_t k) {
  check(!weights.empty(), "internal: choices from an empty population");
  std::vector<double> cumulative(weights.size());
  std::partial_sum(weights.begin(), weights.end(), cumulative.begin());
  double total = cumulative.back();
  check(total > 0.0, "internal: choices: total of weights must be greater than zero");
  check(std::isfinite(total), "internal: choices: total of weights must be finite");
  // bisect_right(cum_weights, random() * total, 0, n - 1): the last index is never searched past.
  auto last = cumulative.end() - 1;
  std::vector<size_t> result(k);
  for (size_t i = 0; i < k; ++i) {
    double x = random() * total;
    result[i] = static_cast<size_t>(std::upper_bound(cumulative.begin(), last, x) - cumulative.begin());
  }
  return result;
}

}  // namespace vortex
