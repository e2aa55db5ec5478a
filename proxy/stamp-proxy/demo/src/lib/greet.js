import { money } from './format.js';

export const source = 'production';

export function greet(name) {
  return `Hello, ${name}! Everything under ${money(5)} today.`;
}
