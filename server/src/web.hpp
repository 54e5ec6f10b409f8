#pragma once
/// @file
/// The dashboard's files (server/web/), embedded into the binary at build
/// time (server/web/embed.cmake writes them into a generated .cpp), and
/// the responses that serve them at `GET /` and `GET /ui/{name}`.
///
/// Ownership: the assets are static data of the program; the views stay
/// valid for its whole life. Thread safety: everything here is read-only
/// and may be called from any thread. Errors: an unknown name is a 404
/// JSON error like every other unknown route; nothing throws but
/// std::bad_alloc.
#include <optional>
#include <span>
#include <string_view>

#include "api.hpp"

namespace aise::server {

/// One embedded file.
struct web_asset {
  std::string_view name;          ///< File name under server/web/, e.g. "app.js".
  std::string_view content_type;  ///< From the extension, with charset for text.
  std::string_view body;          ///< The bytes.
  std::string_view etag;          ///< Quoted strong validator: part of the SHA-256 of `body`.
};

/// Every embedded file (defined in the generated web_assets.cpp).
std::span<const web_asset> web_assets() noexcept;

/// The Content-Security-Policy of the dashboard: only 'self', no inline
/// script or style, no framing.
inline constexpr std::string_view dashboard_csp =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The response for the embedded file `name`: 200 with the bytes,
/// Content-Type, ETag, `Cache-Control: no-cache` (revalidate each time), the
/// CSP above, `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`
/// and `Referrer-Policy: no-referrer`; 304 when `if_none_match` holds the
/// ETag; 404 `not_found` for a name that is not embedded.
response serve_web_asset(std::string_view name, std::optional<std::string_view> if_none_match);

}  // namespace aise::server
