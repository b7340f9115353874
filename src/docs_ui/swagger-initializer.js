// Swagger UI's settings, in a file rather than an inline script: the page's Content-Security-Policy allows
// scripts from this origin only. "openapi.json" is relative to /docs, so the page works behind a path prefix.

// "Try it out" calls the server that serves this page: the document's servers (make run's address) may be
// another origin, which the policy's connect-src 'self' refuses.
const thisServer = new URL(".", window.location.href).href.replace(/\/$/, "");
const ThisServerPlugin = () => ({
  statePlugins: {
    spec: {
      wrapActions: {
        updateJsonSpec: (update) => (spec) =>
          update({ ...spec, servers: [{ url: thisServer, description: "this server" }] }),
      },
    },
  },
});

window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    // No ?url= or ?configUrl= from the address bar: the page shows this API's document only.
    queryConfigEnabled: false,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    plugins: [ThisServerPlugin],
    layout: "BaseLayout",
  });
};
