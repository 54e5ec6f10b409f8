// Uses only the installed headers and library of aise::core.
#include <aise/error.hpp>
#include <aise/version.hpp>

#include <iostream>

int main() {
  aise::error e{aise::errc::not_found, "x"};
  std::cout << AISE_VERSION_STRING << " " << e.message() << "\n";
  return e.code() == aise::errc::not_found ? 0 : 1;
}
