// Starts Swagger UI on the service's own OpenAPI document.  A file, not an inline script: the pages'
// Content-Security-Policy allows scripts from the service only.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: new URL("openapi.json", window.location.href).href,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
});
