// Shows /openapi.json with the Swagger UI that the swagger-ui-bundle package ships (4.x).
// That Swagger UI renders OpenAPI 3.0 only, so the page shows a 3.0 reading of the 3.1
// document: `type: [T, "null"]` becomes `type: T, nullable: true` and `const: v` becomes
// `enum: [v]`. /openapi.json itself stays 3.1; this changes only what the page displays.
function asOpenApi30(node) {
  if (Array.isArray(node)) {
    return node.map(asOpenApi30);
  }
  if (node === null || typeof node !== "object") {
    return node;
  }
  const out = {};
  for (const [key, value] of Object.entries(node)) {
    out[key] = asOpenApi30(value);
  }
  if (Array.isArray(out.type)) {
    const types = out.type.filter((t) => t !== "null");
    if (types.length < out.type.length) {
      out.nullable = true;
    }
    out.type = types.length === 1 ? types[0] : types;
  }
  if ("const" in out) {
    out.enum = [out.const];
    delete out.const;
  }
  return out;
}

function pageSpec(document) {
  const spec = asOpenApi30(document);
  spec.openapi = "3.0.3";
  delete spec.info.summary; // 3.1 only
  return spec;
}

if (typeof module !== "undefined") {
  module.exports = { pageSpec }; // for tests/test_openapi.py, run by node
} else {
  window.onload = showDocs;
}

function showDocs() {
  fetch("openapi.json")
    .then((response) => response.json())
    .then((document) => {
      window.ui = SwaggerUIBundle({
        spec: pageSpec(document),
        dom_id: "#swagger-ui",
        deepLinking: true,
        presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
        layout: "BaseLayout",
      });
    });
}
