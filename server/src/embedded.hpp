#pragma once
/// @file
/// Files shipped inside aise-server, embedded at build time (CMake reads
/// them into a generated source, server/cmake/embed.cmake): the OpenAPI
/// document (server/openapi.json) and the docs page (server/docs.html).
/// The views point at static storage: valid for the whole program.
#include <string_view>

namespace aise::server {

/// server/openapi.json: the OpenAPI 3.1 document of every route.
std::string_view openapi_document() noexcept;

/// server/docs.html: the self-contained page that renders /openapi.json.
std::string_view docs_page() noexcept;

}  // namespace aise::server
