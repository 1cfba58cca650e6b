// ESM types: the same declarations as the CommonJS entry.
export * from './index.js';
