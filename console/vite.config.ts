import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The build is generated code, committed in server/console/static: relative asset
// paths (the server serves it at its root), no source maps, file names from contents.
export default defineConfig({
  plugins: [react()],
  base: "./",
  build: {
    outDir: "../server/console/static",
    emptyOutDir: true,
    sourcemap: false,
    reportCompressedSize: false,
    chunkSizeWarningLimit: 2000,
  },
});
